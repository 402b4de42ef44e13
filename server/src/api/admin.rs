//! `autoglm.v1.AdminService`: status, bootstrap, membership and snapshots.
//! Membership changes run on the leader; a follower forwards them there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use autoglm_client::proto::admin_service_client::AdminServiceClient;
use autoglm_client::proto::admin_service_server::AdminService;
use autoglm_client::proto::*;
use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tonic::{Request, Response, Status};

use super::status::{status, voters_and_learners};
use super::{replica_status, FORWARDED_METADATA};
use crate::raft::NodeId;
use crate::replica::Replica;
use crate::scheduler::limits::ADDRESS_LEN_MAX;
use crate::scheduler::{format, settings, Command};
use crate::security::Principal;

/// How long a snapshot request waits for the snapshot to be written.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

pub struct AdminApi {
    replica: Arc<Replica>,
}

/// How long `Init` tries to make its first write (the entry format).
const INIT_WRITE_WAIT: Duration = Duration::from_secs(10);

impl AdminApi {
    pub fn new(replica: Arc<Replica>) -> Self {
        Self { replica }
    }

    /// `Ok(None)`: this replica leads, go on here. `Ok(Some(client))`: forward
    /// to the leader through `client`.
    fn leader_route<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<AdminServiceClient<tonic::transport::Channel>>, Status> {
        match self.replica.leader_or_err() {
            Ok(()) => Ok(None),
            Err(e) if request.metadata().contains_key(FORWARDED_METADATA) => Err(replica_status(e)),
            Err(crate::replica::ReplicaError::NotLeader { leader_addr, .. }) => {
                let channel = self
                    .replica
                    .peers
                    .channel(&leader_addr)
                    .map_err(|e| Status::internal(e.to_string()))?;
                Ok(Some(AdminServiceClient::new(channel)))
            }
            Err(e) => Err(replica_status(e)),
        }
    }

    /// A new cluster starts at the newest log-entry format all its first
    /// members read, so group commit is on from its first write; setting it
    /// is that first write. Retried through the first election.
    async fn start_at_entry_format(&self, version: u16) -> Result<(), Status> {
        if version <= format::ENTRY_FORMAT_DEFAULT {
            return Ok(());
        }
        let command = Command::SetConfig {
            key: settings::ENTRY_FORMAT.key.to_string(),
            value: version.to_string(),
            expected_version: None,
        };
        let request = rand::random();
        let deadline = tokio::time::Instant::now() + INIT_WRITE_WAIT;
        loop {
            let error = match self.replica.propose(command.clone(), Some(request)).await {
                Ok(crate::scheduler::Response::ConfigWritten(_)) => return Ok(()),
                Ok(other) => format!("answered {other:?}"),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "the cluster is initialized, but setting its log-entry format to {version} \
                     failed ({error}); set it with `autoglm config put {} {version}`",
                    settings::ENTRY_FORMAT.key
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn membership(&self) -> openraft::Membership<NodeId, BasicNode> {
        self.replica
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    async fn change(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
    ) -> Result<MembershipResponse, Status> {
        match self.replica.raft.change_membership(change, false).await {
            Ok(written) => {
                let membership = written.membership.unwrap_or_else(|| self.membership());
                let (voters, learners) = voters_and_learners(&membership);
                Ok(MembershipResponse {
                    voters,
                    learners,
                    log_index: written.log_id.index,
                })
            }
            Err(e) => Err(membership_status(e)),
        }
    }
}

/// `message` as this replica forwards it to the leader: marked, so it is not
/// forwarded again, and acting for the principal that called here.
fn forwarded<T>(message: T, principal: &Principal) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        FORWARDED_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    crate::security::gate::act_for(&mut request, principal)?;
    Ok(request)
}

fn membership_status(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Status::unavailable(format!(
            "leadership moved during the change (leader now {:?}); retry",
            f.leader_id
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(p) => Status::failed_precondition(format!(
                "another membership change is in progress: {p}"
            )),
            ChangeMembershipError::EmptyMembership(_) => Status::failed_precondition(
                "ids: the change would leave the cluster without voters",
            ),
            ChangeMembershipError::LearnerNotFound(l) => Status::not_found(format!(
                "ids: replica {} is not a learner of this cluster; add it with add-learner first",
                l.node_id
            )),
        },
        RaftError::Fatal(f) => Status::internal(f.to_string()),
    }
}

fn check_member(m: &Member, field: &str) -> Result<(), Status> {
    if m.id == 0 {
        return Err(Status::invalid_argument(format!(
            "{field}.id: must be a positive integer"
        )));
    }
    if m.addr.trim().is_empty() || !m.addr.contains(':') || m.addr.len() > ADDRESS_LEN_MAX {
        return Err(Status::invalid_argument(format!(
            "{field}.addr: {} is not host:port (at most {ADDRESS_LEN_MAX} bytes)",
            crate::security::quote(&m.addr)
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    type BackupStream = super::backup::BackupStream;

    async fn backup(
        &self,
        _request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        Ok(Response::new(super::backup::stream(&self.replica).await?))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(status(&self.replica)))
    }

    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let members = request.into_inner().members;
        if members.is_empty() {
            return Err(Status::invalid_argument(
                "members: at least one is required",
            ));
        }
        let mut nodes = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            check_member(m, &format!("members[{i}]"))?;
            if nodes.insert(m.id, BasicNode::new(m.addr.clone())).is_some() {
                return Err(Status::invalid_argument(format!(
                    "members[{i}].id: {} appears twice",
                    m.id
                )));
            }
        }
        if !nodes.contains_key(&self.replica.id) {
            return Err(Status::invalid_argument(format!(
                "members: must include this replica (id {})",
                self.replica.id
            )));
        }
        if self
            .replica
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        {
            return Err(Status::failed_precondition(
                "this replica already belongs to an initialized cluster",
            ));
        }
        // The newest log-entry format every first member reads.
        let mut entry_format = format::ENTRY_FORMAT_MAX;
        for m in &members {
            let reads = self
                .replica
                .peers
                .hello(&m.addr, m.id)
                .await
                .map_err(|e| Status::failed_precondition(format!("members: {e}")))?;
            entry_format = entry_format.min(reads);
        }
        match self.replica.raft.initialize(nodes).await {
            Ok(()) => {
                self.start_at_entry_format(entry_format).await?;
                Ok(Response::new(InitResponse {}))
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => Err(
                Status::failed_precondition(format!("already initialized: {e}")),
            ),
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(Status::internal(f.to_string())),
        }
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        if let Some(mut leader) = self.leader_route(&request)? {
            let principal = Principal::of(&request)?;
            return leader
                .add_learner(forwarded(request.into_inner(), &principal)?)
                .await;
        }
        let req = request.into_inner();
        let member = req
            .member
            .ok_or_else(|| Status::invalid_argument("member: required"))?;
        check_member(&member, "member")?;
        let membership = self.membership();
        if membership.voter_ids().any(|v| v == member.id) {
            return Err(Status::failed_precondition(format!(
                "member.id: replica {} is already a voter",
                member.id
            )));
        }
        let reads = self
            .replica
            .peers
            .hello(&member.addr, member.id)
            .await
            .map_err(|e| Status::failed_precondition(format!("member: {e}")))?;
        let active =
            settings::count_value(&self.replica.state.read().state, &settings::ENTRY_FORMAT);
        if u64::from(reads) < active {
            return Err(Status::failed_precondition(format!(
                "member: replica {} reads log entry formats up to {reads} but the cluster writes {active}; \
                 run the cluster's build on it",
                member.id
            )));
        }
        let added = self
            .replica
            .raft
            .add_learner(member.id, BasicNode::new(member.addr), !req.no_wait)
            .await;
        match added {
            Ok(written) => {
                let membership = written.membership.unwrap_or_else(|| self.membership());
                let (voters, learners) = voters_and_learners(&membership);
                Ok(Response::new(MembershipResponse {
                    voters,
                    learners,
                    log_index: written.log_id.index,
                }))
            }
            Err(e) => Err(membership_status(e)),
        }
    }

    async fn promote(
        &self,
        request: Request<PromoteRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        if let Some(mut leader) = self.leader_route(&request)? {
            let principal = Principal::of(&request)?;
            return leader
                .promote(forwarded(request.into_inner(), &principal)?)
                .await;
        }
        let ids: BTreeSet<NodeId> = request.into_inner().ids.into_iter().collect();
        if ids.is_empty() {
            return Err(Status::invalid_argument("ids: at least one is required"));
        }
        let membership = self.membership();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        if let Some(unknown) = ids.iter().find(|id| !learners.contains(id)) {
            let what = if membership.voter_ids().any(|v| v == *unknown) {
                "already a voter"
            } else {
                "not a learner of this cluster; add it with add-learner first"
            };
            return Err(Status::not_found(format!(
                "ids: replica {unknown} is {what}"
            )));
        }
        Ok(Response::new(
            self.change(ChangeMembers::AddVoterIds(ids)).await?,
        ))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        if let Some(mut leader) = self.leader_route(&request)? {
            let principal = Principal::of(&request)?;
            return leader
                .remove(forwarded(request.into_inner(), &principal)?)
                .await;
        }
        let ids: BTreeSet<NodeId> = request.into_inner().ids.into_iter().collect();
        if ids.is_empty() {
            return Err(Status::invalid_argument("ids: at least one is required"));
        }
        let membership = self.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        if let Some(unknown) = ids
            .iter()
            .find(|id| !voters.contains(id) && !learners.contains(id))
        {
            return Err(Status::not_found(format!(
                "ids: replica {unknown} is not a member of this cluster"
            )));
        }
        let remove_voters: BTreeSet<NodeId> = ids.intersection(&voters).copied().collect();
        if remove_voters.len() == voters.len() {
            return Err(Status::failed_precondition(format!(
                "ids: removing {remove_voters:?} would leave the cluster without voters"
            )));
        }
        let remove_learners: BTreeSet<NodeId> = ids.intersection(&learners).copied().collect();
        let mut response = None;
        if !remove_voters.is_empty() {
            response = Some(
                self.change(ChangeMembers::RemoveVoters(remove_voters))
                    .await?,
            );
        }
        if !remove_learners.is_empty() {
            response = Some(
                self.change(ChangeMembers::<NodeId, BasicNode>::RemoveNodes(
                    remove_learners,
                ))
                .await?,
            );
        }
        Ok(Response::new(
            response.expect("ids is not empty, so one change ran"),
        ))
    }

    async fn trigger_snapshot(
        &self,
        request: Request<TriggerSnapshotRequest>,
    ) -> Result<Response<TriggerSnapshotResponse>, Status> {
        let applied = self.replica.applied_index();
        self.replica
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if request.into_inner().wait {
            self.replica
                .raft
                .wait(Some(SNAPSHOT_WAIT))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= applied),
                    "snapshot",
                )
                .await
                .map_err(|e| {
                    Status::deadline_exceeded(format!("snapshot not built in time: {e}"))
                })?;
        }
        let snapshot_index = self
            .replica
            .raft
            .metrics()
            .borrow()
            .snapshot
            .map(|s| s.index);
        Ok(Response::new(TriggerSnapshotResponse { snapshot_index }))
    }
}
