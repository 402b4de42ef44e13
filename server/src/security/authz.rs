//! The authorization table: every gRPC method a replica serves, and who may
//! call it. One table, checked by one layer ([`super::gate`]) before any
//! request is decoded; a method missing here is refused. A test walks the
//! proto descriptors and fails if a method has no entry.

use autoglm_client::security::Role;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A principal holding one of these roles.
    Roles(&'static [Role]),
    /// A replica certificate naming a current member of this replica's
    /// membership (any replica of the cluster while this one has none yet,
    /// which is how a new replica is first contacted).
    Member,
}

use Role::*;

const ADMIN: &[Role] = &[Admin];
const OPERATE: &[Role] = &[Admin, Operator];
const SUBMIT: &[Role] = &[Admin, Submitter];
/// Cancelling: submitters only their own jobs, checked by the handler.
const CANCEL: &[Role] = &[Admin, Operator, Submitter];
/// Reading: submitters only their own jobs and tasks, checked by the handler.
const READ: &[Role] = &[Admin, Operator, Submitter, Reader];
const EVERYONE: &[Role] = &[Admin, Operator, Submitter, Reader, Agent, Replica];
const AGENTS: &[Role] = &[Agent];

pub const TABLE: &[(&str, Access)] = &[
    // Status is how anyone, replicas and agents included, finds the leader.
    ("/autoglm.v1.AdminService/Status", Access::Roles(EVERYONE)),
    ("/autoglm.v1.AdminService/Init", Access::Roles(ADMIN)),
    ("/autoglm.v1.AdminService/AddLearner", Access::Roles(ADMIN)),
    ("/autoglm.v1.AdminService/Promote", Access::Roles(ADMIN)),
    ("/autoglm.v1.AdminService/Remove", Access::Roles(ADMIN)),
    (
        "/autoglm.v1.AdminService/TriggerSnapshot",
        Access::Roles(ADMIN),
    ),
    // A backup holds token hashes and secret env values.
    ("/autoglm.v1.AdminService/Backup", Access::Roles(ADMIN)),
    ("/autoglm.v1.AclService/Bootstrap", Access::Roles(ADMIN)),
    ("/autoglm.v1.AclService/CreateToken", Access::Roles(ADMIN)),
    ("/autoglm.v1.AclService/ListTokens", Access::Roles(ADMIN)),
    ("/autoglm.v1.AclService/RevokeToken", Access::Roles(ADMIN)),
    ("/autoglm.v1.AclService/WhoAmI", Access::Roles(EVERYONE)),
    ("/autoglm.v1.ConfigService/Get", Access::Roles(READ)),
    ("/autoglm.v1.ConfigService/Put", Access::Roles(ADMIN)),
    (
        "/autoglm.v1.ConfigService/CompareAndSet",
        Access::Roles(ADMIN),
    ),
    (
        "/autoglm.v1.SchedulerService/SubmitJob",
        Access::Roles(SUBMIT),
    ),
    ("/autoglm.v1.SchedulerService/GetJob", Access::Roles(READ)),
    ("/autoglm.v1.SchedulerService/GetTask", Access::Roles(READ)),
    (
        "/autoglm.v1.SchedulerService/ListTasks",
        Access::Roles(READ),
    ),
    ("/autoglm.v1.SchedulerService/WatchJob", Access::Roles(READ)),
    (
        "/autoglm.v1.SchedulerService/WatchTask",
        Access::Roles(READ),
    ),
    (
        "/autoglm.v1.SchedulerService/CancelTask",
        Access::Roles(CANCEL),
    ),
    (
        "/autoglm.v1.SchedulerService/CancelJob",
        Access::Roles(CANCEL),
    ),
    (
        "/autoglm.v1.SchedulerService/ListNodes",
        Access::Roles(READ),
    ),
    (
        "/autoglm.v1.SchedulerService/DrainNode",
        Access::Roles(OPERATE),
    ),
    (
        "/autoglm.v1.SchedulerService/UndrainNode",
        Access::Roles(OPERATE),
    ),
    (
        "/autoglm.v1.SchedulerService/RemoveNode",
        Access::Roles(ADMIN),
    ),
    (
        "/autoglm.v1.SchedulerService/ResetNodeBreaker",
        Access::Roles(OPERATE),
    ),
    // An attempt's output: as its task, submitters only their own.
    (
        "/autoglm.v1.SchedulerService/TaskOutput",
        Access::Roles(READ),
    ),
    // The agent may open a session only for the node its certificate names,
    // checked by the handler against the register message.
    ("/autoglm.v1.AgentService/Session", Access::Roles(AGENTS)),
    ("/autoglm.raft.v1.RaftService/Hello", Access::Member),
    ("/autoglm.raft.v1.RaftService/AppendEntries", Access::Member),
    ("/autoglm.raft.v1.RaftService/Vote", Access::Member),
    (
        "/autoglm.raft.v1.RaftService/InstallSnapshot",
        Access::Member,
    ),
    ("/autoglm.raft.v1.RaftService/Propose", Access::Member),
    ("/autoglm.raft.v1.RaftService/ReadIndex", Access::Member),
    ("/autoglm.raft.v1.RaftService/HandOff", Access::Member),
    ("/autoglm.raft.v1.RaftService/PreVote", Access::Member),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Roles(EVERYONE),
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Roles(EVERYONE),
    ),
];

/// The rule for a request path, if the table has one.
pub fn access(path: &str) -> Option<Access> {
    TABLE.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every method of every service in the proto descriptors.
    fn methods() -> Vec<String> {
        let mut out = Vec::new();
        for bytes in [
            autoglm_client::proto::FILE_DESCRIPTOR_SET,
            crate::raft_proto::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(bytes).unwrap();
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        out.push(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_method_of_every_service_has_an_entry() {
        let methods = methods();
        assert!(methods.len() > 30, "descriptors look empty: {methods:?}");
        let missing: Vec<&String> = methods.iter().filter(|m| access(m).is_none()).collect();
        assert!(missing.is_empty(), "no authorization entry for {missing:?}");
    }

    #[test]
    fn every_entry_names_a_served_method() {
        let methods = methods();
        let stale: Vec<&str> = TABLE
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !p.starts_with("/grpc.reflection.") && !methods.iter().any(|m| m == p))
            .collect();
        assert!(
            stale.is_empty(),
            "entries for methods that do not exist: {stale:?}"
        );
        let mut paths: Vec<&str> = TABLE.iter().map(|(p, _)| *p).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), TABLE.len(), "a method is listed twice");
    }

    #[test]
    fn the_roles_of_the_issue_hold() {
        let roles = |p: &str| match access(p) {
            Some(Access::Roles(r)) => r.to_vec(),
            other => panic!("{p}: {other:?}"),
        };
        let config_put = roles("/autoglm.v1.ConfigService/Put");
        assert_eq!(config_put, vec![Role::Admin]);
        let drain = roles("/autoglm.v1.SchedulerService/DrainNode");
        assert!(drain.contains(&Role::Operator) && !drain.contains(&Role::Submitter));
        let remove = roles("/autoglm.v1.SchedulerService/RemoveNode");
        assert!(!remove.contains(&Role::Operator));
        let submit = roles("/autoglm.v1.SchedulerService/SubmitJob");
        assert!(!submit.contains(&Role::Reader) && !submit.contains(&Role::Agent));
        assert_eq!(roles("/autoglm.v1.AgentService/Session"), vec![Role::Agent]);
        assert_eq!(
            access("/autoglm.raft.v1.RaftService/AppendEntries"),
            Some(Access::Member)
        );
        assert_eq!(access("/autoglm.v1.Nope/Nothing"), None);
    }
}
