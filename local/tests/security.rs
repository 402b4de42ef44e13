//! Security against a real TLS cluster: the authorization matrix (every
//! method of every service, every role), transport refusals, agents bound to
//! their node, replicas bound to the membership, token revocation on every
//! replica, job ownership, and the attacks of the security issue kept as
//! regressions, each now refused with the right status.

mod common;

use std::time::Duration;

use autoglm_client::proto::agent_message::Kind as AgentKind;
use autoglm_client::proto::leader_message::Kind as LeaderKind;
use autoglm_client::proto::{AgentMessage, AttemptReport, AttemptStatus, Register};
use autoglm_client::security::pki::Subject;
use autoglm_client::security::{Credentials, Role};
use autoglm_client::{Client, ClientError, ClientOptions, JobBuilder, NodeAction, TaskBuilder};
use autoglm_server::raft::TypeConfig;
use autoglm_server::raft_proto::RaftMessage;
use autoglm_server::security::authz::{Access, TABLE};
use common::TestCluster;
use tokio_stream::StreamExt;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Code;

/// One caller of the matrix.
struct Caller {
    label: &'static str,
    credentials: Credentials,
    /// The role the gate should see; `None` for no credentials.
    role: Option<Role>,
    /// A replica certificate of a current member.
    member: bool,
}

fn client(cluster: &TestCluster, credentials: Credentials) -> Client {
    let options = ClientOptions {
        deadline: Duration::from_secs(5),
        ..ClientOptions::new(credentials)
    };
    Client::new(cluster.endpoints(), options).unwrap()
}

/// Calls `path` with one empty message, as a stream (which fits unary and
/// streaming methods alike); returns the status code of the first answer.
async fn call(client: &Client, addr: &str, path: &'static str) -> Code {
    let channel = client.channel(addr).unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return Code::Unavailable;
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let request = tonic::Request::new(tokio_stream::iter([()]));
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        grpc.streaming(request, PathAndQuery::from_static(path), codec),
    )
    .await;
    match result {
        Err(_) => Code::DeadlineExceeded,
        Ok(Err(status)) => status.code(),
        Ok(Ok(response)) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                Ok(Some(Err(status))) => status.code(),
                _ => Code::Ok,
            }
        }
    }
}

fn refused(code: Code) -> bool {
    matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_answers_every_role_as_the_table_says() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1]).await;
    let addr = cluster.addr(1);
    let mut callers = vec![Caller {
        label: "no credentials",
        credentials: cluster.token_credentials("").unwrap(),
        role: None,
        member: false,
    }];
    // An empty token is no token: only the CA remains.
    callers[0].credentials.token = None;
    for (label, role) in [
        ("admin certificate", Role::Admin),
        ("operator certificate", Role::Operator),
        ("submitter certificate", Role::Submitter),
        ("reader certificate", Role::Reader),
    ] {
        callers.push(Caller {
            label,
            credentials: cluster
                .user_credentials(label.split(' ').next().unwrap(), role)
                .unwrap(),
            role: Some(role),
            member: false,
        });
    }
    let admin = cluster.client();
    let token = admin.create_token("tok", "reader", 0).await.unwrap().secret;
    callers.push(Caller {
        label: "reader token",
        credentials: cluster.token_credentials(&token).unwrap(),
        role: Some(Role::Reader),
        member: false,
    });
    let agent = Subject::Agent {
        node: "gpu-a".into(),
    };
    callers.push(Caller {
        label: "agent certificate",
        credentials: cluster.credentials_for(agent, "agent-gpu-a").unwrap(),
        role: Some(Role::Agent),
        member: false,
    });
    let stranger = Subject::Replica {
        id: 99,
        hosts: vec![],
    };
    callers.push(Caller {
        label: "non-member replica certificate",
        credentials: cluster.credentials_for(stranger, "replica-99").unwrap(),
        role: Some(Role::Replica),
        member: false,
    });
    let member = Subject::Replica {
        id: 1,
        hosts: vec![],
    };
    callers.push(Caller {
        label: "member replica certificate",
        credentials: cluster.credentials_for(member, "replica-1").unwrap(),
        role: Some(Role::Replica),
        member: true,
    });

    let mut wrong = Vec::new();
    for caller in &callers {
        let c = client(&cluster, caller.credentials.clone());
        for (path, access) in TABLE {
            let code = call(&c, &addr, path).await;
            let expected = match (caller.role, access) {
                (None, _) => Some(Code::Unauthenticated),
                (Some(role), Access::Roles(roles)) if roles.contains(&role) => None,
                (Some(_), Access::Roles(_)) => Some(Code::PermissionDenied),
                (Some(_), Access::Member) if caller.member => None,
                (Some(_), Access::Member) => Some(Code::PermissionDenied),
            };
            let ok = match expected {
                Some(e) => code == e,
                None => !refused(code),
            };
            if !ok {
                wrong.push(format!(
                    "{path} as {}: got {code:?}, expected {expected:?}",
                    caller.label
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_foreign_certificates_are_refused() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1]).await;
    let plaintext = client(&cluster, Credentials::plaintext());
    let e = plaintext.status().await.unwrap_err();
    assert!(!matches!(e.code(), Some(Code::Ok)), "{e}");

    // Same cluster name, another CA: its certificates name nobody here, and
    // its clients cannot verify our replicas either.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other =
        autoglm_local::cluster::LocalCluster::new(other_dir.path(), common::replica_launcher(), "")
            .with_cluster_name("test");
    let foreign = other.user_credentials("mallory", Role::Admin).unwrap();
    let e = client(&cluster, foreign).status().await.unwrap_err();
    assert!(!matches!(e.code(), Some(Code::Ok)), "{e}");

    // Our CA, but a client certificate from the other one.
    let mixed_files = autoglm_client::security::TlsFiles {
        ca_file: Some(cluster.tls_dir().join("ca.pem")),
        cert_file: Some(other.tls_dir().join("user-mallory.pem")),
        key_file: Some(other.tls_dir().join("user-mallory-key.pem")),
    };
    let mixed = Credentials {
        transport: autoglm_client::security::Transport::tls(&mixed_files).unwrap(),
        token: None,
    };
    let e = client(&cluster, mixed)
        .config_put("kv/k", "v")
        .await
        .unwrap_err();
    assert!(!matches!(e.code(), Some(Code::Ok)), "{e}");
    assert_eq!(
        cluster
            .client()
            .config_get("kv/k", false)
            .await
            .unwrap()
            .entry,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_cannot_send_raft_messages_and_the_term_stays() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let term = |s: autoglm_client::proto::StatusResponse| s.term;
    let before = term(cluster.status(1).await.unwrap());

    let forged: openraft::raft::AppendEntriesRequest<TypeConfig> =
        openraft::raft::AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1000, 9),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
    let vote: openraft::raft::VoteRequest<u64> =
        openraft::raft::VoteRequest::new(openraft::Vote::new(1000, 99), None);
    let message = |payload: Vec<u8>| RaftMessage {
        protocol_version: autoglm_server::raft::PROTOCOL_VERSION,
        cluster_name: "test".into(),
        payload,
    };
    let stranger = cluster
        .credentials_for(
            Subject::Replica {
                id: 99,
                hosts: vec![],
            },
            "replica-99",
        )
        .unwrap();
    let no_cert = {
        let mut c = cluster.token_credentials("").unwrap();
        c.token = None;
        c
    };
    let admin_user = cluster.user_credentials("root-user", Role::Admin).unwrap();
    for (label, credentials, expected) in [
        ("non-member replica", stranger, Code::PermissionDenied),
        ("no certificate", no_cert, Code::Unauthenticated),
        ("admin user", admin_user, Code::PermissionDenied),
    ] {
        let c = client(&cluster, credentials);
        let channel = c.channel(&cluster.addr(1)).unwrap();
        let mut raft =
            autoglm_server::raft_proto::raft_service_client::RaftServiceClient::new(channel);
        let e = raft
            .append_entries(message(postcard::to_stdvec(&forged).unwrap()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), expected, "append_entries as {label}: {e}");
        let e = raft
            .vote(message(postcard::to_stdvec(&vote).unwrap()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), expected, "vote as {label}: {e}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in [1, 2, 3] {
        assert_eq!(
            term(cluster.status(id).await.unwrap()),
            before,
            "replica {id}'s term moved"
        );
    }
}

/// Opens an agent session with `credentials`, registering as `node`.
async fn open_session(
    cluster: &TestCluster,
    credentials: Credentials,
    node: &str,
    reports: Vec<AttemptReport>,
) -> Result<Vec<LeaderKind>, tonic::Status> {
    let c = client(cluster, credentials);
    let leader = cluster
        .wait_leader(&cluster.ids(), None, Duration::from_secs(10))
        .await
        .unwrap();
    let channel = c.channel(&cluster.addr(leader)).unwrap();
    let mut agent = autoglm_client::proto::agent_service_client::AgentServiceClient::new(channel);
    let mut messages = vec![AgentMessage {
        kind: Some(AgentKind::Register(Register {
            node: node.to_string(),
            gpus: vec![autoglm_client::proto::Gpu {
                index: 0,
                uuid: "GPU-0".into(),
                model: "H100".into(),
                memory_mb: 80_000,
            }],
            cpu_millis: 1000,
            memory_mb: 1000,
            ..Default::default()
        })),
    }];
    messages.extend(reports.into_iter().map(|r| AgentMessage {
        kind: Some(AgentKind::Report(r)),
    }));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for m in messages {
        tx.send(m).await.unwrap();
    }
    let mut inbound = agent
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), inbound.next()).await {
        seen.extend(m.kind);
        if seen.iter().any(|k| matches!(k, LeaderKind::Stale(_))) {
            break;
        }
    }
    drop(tx);
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_acts_only_for_the_node_its_certificate_names() {
    let mut cluster = TestCluster::new(
        "scheduler:\n  heartbeat_interval_ms: 300\n  node_ttl_ms: 3000\n  election_grace_ms: 600\n",
    );
    cluster.start_and_init(&[1]).await;
    let a = cluster
        .credentials_for(
            Subject::Agent {
                node: "gpu-a".into(),
            },
            "agent-gpu-a",
        )
        .unwrap();
    let e = open_session(&cluster, a.clone(), "gpu-b", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("gpu-b"), "{e}");
    let user = cluster.user_credentials("eve", Role::Submitter).unwrap();
    let e = open_session(&cluster, user, "gpu-b", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    // gpu-b, a real agent, runs a long task; gpu-a reports it done.
    let b = common::sim_agent("gpu-b", 1, 1);
    cluster.spawn_agent(&b).unwrap();
    let admin = cluster.client();
    let job = admin
        .submit(
            JobBuilder::new("c")
                .task(TaskBuilder::sim("long", Duration::from_secs(30)).gpus(1, 1_000)),
        )
        .await
        .unwrap();
    let task = job.task_ids["long"];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let attempt = loop {
        let t = admin.get_task(task, false).await.unwrap();
        if t.node == "gpu-b" && t.attempt > 0 {
            break t.attempt;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never placed on gpu-b: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let forged = AttemptReport {
        task_id: task,
        attempt,
        status: AttemptStatus::Succeeded as i32,
        exit_code: Some(0),
        ..Default::default()
    };
    let seen = open_session(&cluster, a, "gpu-a", vec![forged])
        .await
        .unwrap();
    assert!(
        seen.iter().any(|k| matches!(k, LeaderKind::Stale(_))),
        "gpu-a's report on gpu-b's attempt must be refused as stale: {seen:?}"
    );
    let t = admin.get_task(task, false).await.unwrap();
    assert_eq!(t.node, "gpu-b");
    assert_ne!(
        t.state,
        autoglm_client::proto::TaskState::Succeeded as i32,
        "a forged report completed the task"
    );
    cluster.assert_no_panic();
}

/// The probe "two agents with one name ran 6 of 8 tasks twice": a second
/// process for a node that a live agent serves is refused, even with that
/// node's certificate, and the node's work runs once, on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_agent_process_for_a_served_node_is_refused() {
    let mut cluster = TestCluster::new(
        "scheduler:\n  heartbeat_interval_ms: 300\n  node_ttl_ms: 3000\n  election_grace_ms: 600\n",
    );
    cluster.start_and_init(&[1]).await;
    let d = common::sim_agent("gpu-d", 1, 8);
    cluster.spawn_agent(&d).unwrap();
    let admin = cluster.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while admin.list_nodes(true).await.unwrap().nodes.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "gpu-d did not register"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same certificate in a second process (no instance, or another).
    let stolen = cluster
        .credentials_for(
            Subject::Agent {
                node: "gpu-d".into(),
            },
            "agent-gpu-d",
        )
        .unwrap();
    let e = open_session(&cluster, stolen, "gpu-d", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    assert!(e.message().contains("gpu-d"), "{e}");

    let mut job = JobBuilder::new("twice");
    for i in 0..8 {
        job =
            job.task(TaskBuilder::sim(&format!("t{i}"), Duration::from_millis(100)).gpus(1, 1_000));
    }
    let job = admin.submit(job).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let j = admin.get_job(job.job_id, false).await.unwrap();
        if j.tasks
            .iter()
            .all(|t| t.state == autoglm_client::proto::TaskState::Succeeded as i32)
        {
            for t in &j.tasks {
                let ran: Vec<&str> = t.attempts.iter().map(|a| a.node.as_str()).collect();
                assert_eq!((t.attempt, ran), (1, vec!["gpu-d"]), "{t:?}");
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nodes = admin.list_nodes(true).await.unwrap().nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        nodes[0].gpus.len(),
        1,
        "the refused registration changed nothing"
    );
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_fails_on_every_replica_once_applied() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let admin = cluster.client();
    let created = admin.create_token("bob", "reader", 0).await.unwrap();
    let accessor = created.info.unwrap().accessor;
    let ids = cluster.ids();
    cluster
        .wait_converged(&ids, Duration::from_secs(10))
        .await
        .unwrap();
    let on = |id: u64, cluster: &mut TestCluster| {
        let credentials = cluster.token_credentials(&created.secret).unwrap();
        let options = ClientOptions {
            deadline: Duration::from_secs(2),
            ..ClientOptions::new(credentials)
        };
        Client::new([cluster.addr(id)], options).unwrap()
    };
    for id in ids.clone() {
        let me = on(id, &mut cluster).who_am_i().await.unwrap();
        assert_eq!((me.name.as_str(), me.role.as_str()), ("bob", "reader"));
    }
    admin.revoke_token(&accessor).await.unwrap();
    cluster
        .wait_converged(&ids, Duration::from_secs(10))
        .await
        .unwrap();
    for id in ids {
        let e = on(id, &mut cluster).status().await.unwrap_err();
        assert_eq!(e.code(), Some(Code::Unauthenticated), "replica {id}: {e}");
    }
    let e = admin.revoke_token(&accessor).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
}

/// CreateToken for a reader "carol" at `addr`, with request id `id`.
async fn create_token_with_id(
    admin: &Client,
    addr: &str,
    id: &str,
) -> autoglm_client::proto::CreateTokenResponse {
    let channel = admin.channel(addr).unwrap();
    let mut acl = autoglm_client::proto::acl_service_client::AclServiceClient::new(channel);
    let mut request = tonic::Request::new(autoglm_client::proto::CreateTokenRequest {
        name: "carol".into(),
        role: "reader".into(),
        ttl_seconds: 0,
    });
    request
        .metadata_mut()
        .insert(autoglm_client::REQUEST_ID_METADATA, id.parse().unwrap());
    acl.create_token(request).await.unwrap().into_inner()
}

/// A token creation retried after its answer was lost (same request id):
/// the retry's answer holds a working token, and the token of the first
/// try, whose secret nobody received, is revoked rather than left live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_token_creation_answers_a_working_token_and_leaves_no_orphan() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let admin = cluster.client();
    let leader = cluster
        .wait_leader(&cluster.ids(), None, Duration::from_secs(10))
        .await
        .unwrap();
    let request_id = format!("{:032x}", rand::random::<u128>());
    // The first try is applied; pretend its answer never arrived. The retry
    // goes to a follower, as a client failing over would.
    let lost = create_token_with_id(&admin, &cluster.addr(leader), &request_id).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let retried = create_token_with_id(&admin, &cluster.addr(follower), &request_id).await;
    assert_ne!(lost.secret, retried.secret);
    let on = |secret: &str, cluster: &mut TestCluster| {
        let credentials = cluster.token_credentials(secret).unwrap();
        client(cluster, credentials)
    };
    let me = on(&retried.secret, &mut cluster).who_am_i().await.unwrap();
    assert_eq!((me.name.as_str(), me.role.as_str()), ("carol", "reader"));
    let e = on(&lost.secret, &mut cluster).who_am_i().await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated), "{e}");
    let carols: Vec<_> = admin
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.name == "carol")
        .collect();
    assert_eq!(carols.len(), 1, "one live token for carol: {carols:?}");
    assert_eq!(
        Some(&carols[0].accessor),
        retried.info.as_ref().map(|i| &i.accessor)
    );
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_reads_and_cancels_only_its_own_jobs() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1]).await;
    let admin = cluster.client();
    let mut users = Vec::new();
    for (name, role) in [
        ("alice", "submitter"),
        ("bob", "submitter"),
        ("ops", "operator"),
    ] {
        let token = admin.create_token(name, role, 0).await.unwrap().secret;
        let credentials = cluster.token_credentials(&token).unwrap();
        users.push(client(&cluster, credentials));
    }
    let [alice, bob, ops] = <[Client; 3]>::try_from(users).ok().unwrap();
    let job =
        |name: &str| JobBuilder::new(name).task(TaskBuilder::sim("t", Duration::from_secs(60)));
    let a1 = alice.submit(job("a1")).await.unwrap();
    let a2 = alice.submit(job("a2")).await.unwrap();
    let b1 = bob.submit(job("b1")).await.unwrap();

    let denied = |r: Result<_, ClientError>| match r {
        Err(e) => assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}"),
        Ok(_) => panic!("bob reached alice's job"),
    };
    denied(bob.cancel_job(a1.job_id).await.map(|_| ()));
    denied(bob.get_job(a1.job_id, false).await.map(|_| ()));
    denied(bob.cancel_task(a1.task_ids["t"]).await.map(|_| ()));
    denied(bob.get_task(a1.task_ids["t"], false).await.map(|_| ()));
    let listed = bob.list_tasks(Default::default()).await.unwrap();
    assert!(
        listed.tasks.iter().all(|t| t.job_id == b1.job_id),
        "bob lists only his own tasks: {:?}",
        listed.tasks
    );
    alice.cancel_job(a1.job_id).await.unwrap();
    ops.cancel_job(a2.job_id).await.unwrap();
    let e = bob.cancel_job(987_654).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    // A free-text client id names nobody: alice's key used by bob is refused.
    let keyed = || {
        JobBuilder::new("shared")
            .idempotency_key("same")
            .task(TaskBuilder::sim("t", Duration::ZERO))
    };
    alice.submit(keyed()).await.unwrap();
    let e = bob.submit(keyed()).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_of_the_security_issue_are_refused() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let anonymous = {
        let mut c = cluster.token_credentials("").unwrap();
        c.token = None;
        client(&cluster, c)
    };
    let unauthenticated = |r: Result<(), ClientError>, what: &str| match r {
        Err(e) => assert_eq!(e.code(), Some(Code::Unauthenticated), "{what}: {e}"),
        Ok(()) => panic!("{what}: accepted without credentials"),
    };
    let exec =
        JobBuilder::new("probe").task(TaskBuilder::exec("id", ["sh", "-c", "id > /tmp/pwned"]));
    unauthenticated(anonymous.submit(exec).await.map(|_| ()), "exec submission");
    unauthenticated(anonymous.cancel_job(1).await.map(|_| ()), "cancel");
    unauthenticated(
        anonymous
            .config_put("placement/policy", "random")
            .await
            .map(|_| ()),
        "config",
    );
    unauthenticated(
        anonymous
            .config_put("admission/rate_per_second", "1")
            .await
            .map(|_| ()),
        "admission rate",
    );
    unauthenticated(
        anonymous
            .node_admin("gpu-1", NodeAction::Drain)
            .await
            .map(|_| ()),
        "drain",
    );
    unauthenticated(
        anonymous
            .node_admin("gpu-1", NodeAction::Remove)
            .await
            .map(|_| ()),
        "remove node",
    );
    unauthenticated(
        anonymous
            .trigger_snapshot(&cluster.addr(1), false)
            .await
            .map(|_| ()),
        "snapshot",
    );
    unauthenticated(anonymous.remove(vec![3]).await.map(|_| ()), "membership");

    // A rogue replica with the same cluster name but its own CA cannot be
    // added: the leader cannot verify it.
    let rogue_dir = tempfile::tempdir().unwrap();
    let mut rogue =
        autoglm_local::cluster::LocalCluster::new(rogue_dir.path(), common::replica_launcher(), "")
            .with_cluster_name("test");
    rogue.spawn(4).unwrap();
    rogue
        .wait_answering(4, Duration::from_secs(30))
        .await
        .unwrap();
    let member = autoglm_client::proto::Member {
        id: 4,
        addr: rogue.addr(4),
    };
    let e = cluster
        .client()
        .add_learner(member, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    let members = cluster.client().status().await.unwrap();
    assert!(
        !members
            .learners
            .iter()
            .chain(&members.voters)
            .any(|m| m.id == 4),
        "{members:?}"
    );
    cluster.assert_no_panic();
}

/// SubmitJobRequest with `client_id` as raw bytes, to send invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawSubmit {
    #[prost(bytes = "vec", tag = "1")]
    client_id: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_overflowing_and_undecodable_input_is_invalid_argument_naming_the_field() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1]).await;
    let client = cluster.client();
    let short = |e: &ClientError| {
        let m = e.to_string();
        assert!(
            m.len() < 600,
            "the error quotes too much ({} bytes)",
            m.len()
        );
        m
    };
    let huge = "m".repeat(1_300_000);
    let job = JobBuilder::new("c").task(TaskBuilder::sim("t", Duration::ZERO).model(&huge));
    let e = client.submit(job).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    assert!(short(&e).contains("(t).model"), "{e}");

    let job = JobBuilder::new("c").task(
        TaskBuilder::sim("t", Duration::ZERO)
            .attempt_timeout(Duration::from_millis(u64::MAX - 1000)),
    );
    let e = client.submit(job).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    assert!(short(&e).contains("attempt_timeout_ms"), "{e}");

    let job = JobBuilder::new("c")
        .task(TaskBuilder::sim("t", Duration::ZERO).label("k", &"v".repeat(1 << 20)));
    let e = client.submit(job).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    assert!(short(&e).contains("labels"), "{e}");

    let channel = client.channel(&cluster.addr(1)).unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<RawSubmit, ()>::default();
    let raw = RawSubmit {
        client_id: vec![b'o', 0xff, 0xfe, b'k'],
    };
    let e = grpc
        .unary(
            tonic::Request::new(raw),
            PathAndQuery::from_static("/autoglm.v1.SchedulerService/SubmitJob"),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("client_id"), "{e:?}");

    for (key, value) in [
        ("limits/payload_bytes_max", "abc"),
        ("limits/payload_bytes_max", "-1"),
        ("limits/payload_bytes_max", "0"),
        ("placement/polcy", "random"),
    ] {
        let e = client.config_put(key, value).await.unwrap_err();
        assert_eq!(e.code(), Some(Code::InvalidArgument), "{key}={value}: {e}");
        assert!(e.to_string().contains(key), "{e}");
    }
    // Still accepting submissions: nothing above changed the limit.
    client
        .submit(JobBuilder::new("c").task(TaskBuilder::sim("ok", Duration::ZERO)))
        .await
        .unwrap();
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_heartbeats_is_removed() {
    let mut cluster = TestCluster::new(
        "scheduler:\n  heartbeat_interval_ms: 300\n  node_ttl_ms: 1000\n  election_grace_ms: 300\n",
    );
    cluster.start_and_init(&[1]).await;
    let admin = cluster.client();
    admin
        .config_put("nodes/remove_down_after_ms", "2000")
        .await
        .unwrap();
    let fake = cluster
        .credentials_for(
            Subject::Agent {
                node: "silent".into(),
            },
            "agent-silent",
        )
        .unwrap();
    open_session(&cluster, fake, "silent", vec![])
        .await
        .unwrap();
    let listed =
        |r: autoglm_client::proto::ListNodesResponse| r.nodes.iter().any(|n| n.name == "silent");
    assert!(listed(admin.list_nodes(false).await.unwrap()), "registered");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while listed(admin.list_nodes(false).await.unwrap()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent node was never removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_admin_calls_for_their_caller_and_nobody_else_may_claim_to() {
    let mut cluster = TestCluster::new("");
    let leader = cluster.start_and_init(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    let at_follower = |credentials: Credentials, cluster: &TestCluster| {
        let options = ClientOptions {
            deadline: Duration::from_secs(3),
            ..ClientOptions::new(credentials)
        };
        Client::new([cluster.addr(follower)], options).unwrap()
    };
    // Forwarded as the admin it came from: the leader judges the request itself.
    let admin = at_follower(cluster.admin_credentials(), &cluster);
    let e = admin.promote(vec![42]).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    let reader = cluster.user_credentials("rita", Role::Reader).unwrap();
    let e = at_follower(reader, &cluster)
        .promote(vec![42])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");

    // Claiming to act for an admin: only member replicas may.
    for (label, credentials, expected) in [
        (
            "user",
            cluster
                .user_credentials("mallory", Role::Submitter)
                .unwrap(),
            Code::PermissionDenied,
        ),
        (
            "non-member replica",
            cluster
                .credentials_for(
                    Subject::Replica {
                        id: 77,
                        hosts: vec![],
                    },
                    "replica-77",
                )
                .unwrap(),
            Code::PermissionDenied,
        ),
    ] {
        let c = client(&cluster, credentials);
        let channel = c.channel(&cluster.addr(leader)).unwrap();
        let mut admin =
            autoglm_client::proto::admin_service_client::AdminServiceClient::new(channel);
        let mut request =
            tonic::Request::new(autoglm_client::proto::RemoveRequest { ids: vec![3] });
        request.metadata_mut().insert(
            autoglm_server::security::gate::ON_BEHALF_OF_METADATA,
            "admin root".parse().unwrap(),
        );
        let e = admin.remove(request).await.unwrap_err();
        assert_eq!(e.code(), expected, "{label}: {e}");
    }
    assert_eq!(cluster.client().status().await.unwrap().voters.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_refuse_exec_by_default_and_secret_env_is_redacted_on_read() {
    let mut cluster = TestCluster::new(
        "scheduler:\n  heartbeat_interval_ms: 300\n  node_ttl_ms: 3000\n  election_grace_ms: 600\n",
    );
    cluster.start_and_init(&[1]).await;
    // No GPUs, exec left at its default (off).
    let agent = autoglm_agent::AgentConfig::simulated("gpu-x", Vec::new(), 1);
    cluster.spawn_agent(&agent).unwrap();
    let admin = cluster.client();
    let marker = cluster.dir.path().join("ran");
    let probe = format!("id > {}", marker.display());
    let job = JobBuilder::new("c").task(
        TaskBuilder::exec("id", ["sh", "-c", probe.as_str()])
            .env("HF_TOKEN", "hf_pattern_secret")
            .env("PLAIN", "plain")
            .secret_env("DB_PASS", "marked_secret"),
    );
    let submitted = admin.submit(job).await.unwrap();
    let task = submitted.task_ids["id"];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let t = admin.get_task(task, false).await.unwrap();
        if t.state == autoglm_client::proto::TaskState::Failed as i32 {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "never failed: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(done.message.contains("exec.enabled"), "{done:?}");
    assert!(!marker.exists(), "the command ran");

    let env =
        |t: &autoglm_client::proto::Task| match t.spec.as_ref().and_then(|s| s.payload.clone()) {
            Some(autoglm_client::proto::task_spec::Payload::Exec(e)) => e.env,
            other => panic!("{other:?}"),
        };
    // The owner (here the admin certificate's user) and admins see values.
    let owner_view = env(&admin.get_task(task, false).await.unwrap());
    assert_eq!(owner_view["HF_TOKEN"], "hf_pattern_secret");
    assert_eq!(owner_view["DB_PASS"], "marked_secret");
    let rita = cluster.user_credentials("rita", Role::Reader).unwrap();
    let reader = client(&cluster, rita);
    for t in [
        reader.get_task(task, false).await.unwrap(),
        reader
            .get_job(submitted.job_id, false)
            .await
            .unwrap()
            .tasks
            .remove(0),
    ] {
        let seen = env(&t);
        assert_eq!(seen["HF_TOKEN"], "<redacted>", "a configured pattern");
        assert_eq!(seen["DB_PASS"], "<redacted>", "marked at submission");
        assert_eq!(seen["PLAIN"], "plain");
    }
    cluster.assert_no_panic();
    assert!(
        !cluster.logs().contains("marked_secret") && !cluster.logs().contains("hf_pattern_secret"),
        "a secret reached a log"
    );
}

/// The leaf certificate a replica presents to a new connection.
async fn presented_certificate(cluster: &TestCluster, id: u64) -> Vec<u8> {
    use autoglm_client::security::tls::{load_certs, provider};
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&cluster.tls_dir().join("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(cluster.addr(id))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_connections_without_a_restart() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1]).await;
    let before = presented_certificate(&cluster, 1).await;
    let pid = cluster.pid(1);
    let tls = cluster.tls_dir();
    let subject = Subject::Replica {
        id: 1,
        hosts: vec!["127.0.0.1".into(), "localhost".into()],
    };
    autoglm_client::security::pki::issue(&tls, subject, &tls, "replica-1", 30, true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while presented_certificate(&cluster, 1).await == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cluster.pid(1), pid, "no restart");
    // A fresh client on the new certificate: the replica still serves.
    cluster
        .client()
        .config_put("kv/after-rotation", "1")
        .await
        .unwrap();
    // A half-written rotation (a key that does not match) keeps the last
    // good certificate in use.
    std::fs::write(tls.join("replica-1-key.pem"), b"not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster
        .client()
        .config_get("kv/after-rotation", false)
        .await
        .unwrap();
    cluster.assert_no_panic();
}
