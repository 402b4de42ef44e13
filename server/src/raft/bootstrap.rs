//! Starting a replica: open (or create) its data dir, check it belongs to this
//! replica, start openraft, serve gRPC and HTTP. A replica restarted on its
//! data dir rejoins its cluster by itself; a new one waits for `Init` or
//! `AddLearner`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use autoglm_client::proto::acl_service_server::AclServiceServer;
use autoglm_client::proto::admin_service_server::AdminServiceServer;
use autoglm_client::proto::agent_service_server::AgentServiceServer;
use autoglm_client::proto::config_service_server::ConfigServiceServer;
use autoglm_client::proto::scheduler_service_server::SchedulerServiceServer;
use autoglm_client::security::Transport;
use autoglm_storage::{DataDirIdentity, StoreOptions};
use tokio::net::TcpListener;

use super::group_commit::GroupCommit;
use super::network::NetworkFactory;
use super::peers::Peers;
use super::service::RaftRpc;
use super::Raft;
use crate::api::acl::AclApi;
use crate::api::admin::AdminApi;
use crate::api::agent::AgentApi;
use crate::api::config::ConfigApi;
use crate::api::scheduler::SchedulerApi;
use crate::config::ServerConfig;
use crate::leader::hub::AgentHub;
use crate::leader::SchedulerSettings;
use crate::metrics::Events;
use crate::raft_proto::raft_service_server::RaftServiceServer;
use crate::replica::Replica;
use crate::scheduler::SchedulerState;
use crate::security::tls::{incoming, server_tls, ServerTls};
use crate::security::{Gate, GateLayer};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {path}: {reason}")]
    DataDir { path: String, reason: String },
    /// The store is damaged or lost acknowledged entries: exit code 3.
    #[error("{0}")]
    Damaged(autoglm_storage::Damage),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Listen {
        addr: String,
        what: &'static str,
        reason: String,
    },
    #[error("raft failed to start: {0}")]
    Raft(String),
    #[error("tls: {0}")]
    Tls(String),
}

/// How long a stopping follower lets calls in flight finish.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// A started replica; `serve` runs it until shutdown.
pub struct Running {
    pub replica: Arc<Replica>,
    snapshot_stats: autoglm_storage::SnapshotStats,
    grpc: TcpListener,
    http: TcpListener,
    max_message_bytes: usize,
    scheduler: SchedulerSettings,
    /// The listener's TLS; `None` only under --insecure.
    tls: Option<ServerTls>,
    /// Synced once Raft has stopped, so a clean stop leaves an exact watermark.
    watermark: autoglm_storage::WatermarkWriter,
}

async fn bind(addr: &str, what: &'static str) -> Result<TcpListener, StartError> {
    let listen_err = |reason: String| StartError::Listen {
        addr: addr.to_string(),
        what,
        reason,
    };
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|e| listen_err(format!("not an ip:port ({e})")))?;
    TcpListener::bind(parsed)
        .await
        .map_err(|e| listen_err(e.to_string()))
}

/// Where a replica's Raft store lives inside its data dir.
pub fn store_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("raft")
}

pub async fn start(config: &ServerConfig) -> Result<Running, StartError> {
    let raft_config = Arc::new(config.openraft_config()?);
    let dir = &config.data_dir;
    let dir_err = |reason: String| StartError::DataDir {
        path: dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| dir_err(e.to_string()))?;
    let options = StoreOptions {
        cache_capacity_bytes: config.storage.cache_capacity_mb * 1024 * 1024,
    };
    let opened =
        autoglm_storage::open::<super::TypeConfig, SchedulerState>(&store_dir(dir), &options)
            .map_err(|e| match e {
                autoglm_storage::OpenError::Damaged(d) => StartError::Damaged(d),
                other => dir_err(other.to_string()),
            })?;
    let verified = opened.verified.clone();
    let (db, log, sm) = (opened.db, opened.log, opened.state_machine);
    DataDirIdentity {
        cluster_name: config.cluster_name.clone(),
        node_id: config.node_id,
    }
    .check_or_claim(&db)
    .map_err(|e| dir_err(e.to_string()))?;
    let v = &verified;
    tracing::info!(
        entries = v.entries,
        last_index = ?v.last_index,
        committed = ?v.committed,
        snapshot_index = ?v.snapshot_index,
        watermark = ?v.watermark,
        format = v.format,
        "store verified"
    );

    // TLS files are read before anything listens: a bad file fails the start.
    let (tls, transport) = if config.insecure {
        (None, Transport::Plaintext)
    } else {
        (
            Some(server_tls(&config.tls).map_err(StartError::Tls)?),
            Transport::tls(&config.tls).map_err(StartError::Tls)?,
        )
    };
    // Bind before starting raft so a busy port fails fast and cleanly.
    let grpc = bind(&config.listen, "grpc").await?;
    let http = bind(&config.http_listen, "http").await?;

    let max_message_bytes = config.grpc.max_message_bytes as usize;
    let peers = Arc::new(Peers::new(
        config.cluster_name.clone(),
        transport,
        max_message_bytes,
        Duration::from_millis(config.grpc.connect_timeout_ms),
    ));
    let committed = log.committed_watch();
    let watermark = log.watermark();
    let state = sm.shared();
    let snapshot_stats = sm.snapshot_stats();
    let raft = Raft::new(
        config.node_id,
        raft_config,
        NetworkFactory::new(peers.clone()),
        log,
        sm,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let events = Events::default();
    let group_commit =
        GroupCommit::start(config.node_id, raft.clone(), state.clone(), events.clone());
    let replica = Arc::new(Replica {
        id: config.node_id,
        raft,
        state,
        peers,
        committed,
        admission: Default::default(),
        stopping: Default::default(),
        contact: Default::default(),
        election: config.election_timeouts(),
        group_commit,
        events,
    });
    Ok(Running {
        replica,
        snapshot_stats,
        grpc,
        http,
        max_message_bytes,
        scheduler: config.scheduler.clone(),
        tls,
        watermark,
    })
}

impl Running {
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }

    /// Serves until `shutdown` resolves, then stops raft.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let replica = self.replica.clone();
        let hub = Arc::new(AgentHub::default());
        let supervisor =
            crate::leader::spawn_supervisor(replica.clone(), hub.clone(), self.scheduler.clone());
        let elections = super::election::spawn(replica.clone(), replica.election);
        let leader_changes = crate::metrics::count_leader_changes(replica.clone());
        let registry = crate::metrics::registry(
            &replica.events,
            crate::metrics::collector::ReplicaCollector {
                replica: replica.clone(),
                hub: hub.clone(),
                snapshots: self.snapshot_stats.clone(),
            },
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut http_stop = stop_rx.clone();
        let gate = Gate::new(replica.clone(), self.tls.is_some());
        let dashboard = crate::dashboard::Dashboard::new(
            replica.clone(),
            hub.clone(),
            gate.clone(),
            SchedulerApi::new(replica.clone(), hub.clone(), self.scheduler.clone()),
        );
        let http = axum::serve(
            self.http,
            crate::http::router(replica.clone(), registry, dashboard),
        )
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
        let http = tokio::spawn(async move { http.await.map_err(|e| format!("http server: {e}")) });

        let raft_service = RaftServiceServer::new(RaftRpc::new(replica.clone()))
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        // Both reflection versions: grpcurl and grpc_cli speak v1, the Python
        // reflection client and several GUI tools only v1alpha.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(autoglm_client::proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| format!("grpc reflection: {e}"))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(autoglm_client::proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| format!("grpc reflection v1alpha: {e}"))?;
        let mut grpc_stop = stop_rx;
        let incoming = incoming(
            self.grpc,
            self.tls,
            replica.peers.cluster_name().to_string(),
        );
        let grpc = tonic::transport::Server::builder()
            .layer(GateLayer(gate))
            .add_service(raft_service)
            .add_service(AclServiceServer::new(AclApi::new(replica.clone())))
            .add_service(AdminServiceServer::new(AdminApi::new(replica.clone())))
            .add_service(ConfigServiceServer::new(ConfigApi::new(replica.clone())))
            .add_service(SchedulerServiceServer::new(SchedulerApi::new(
                replica.clone(),
                hub.clone(),
                self.scheduler.clone(),
            )))
            .add_service(AgentServiceServer::new(AgentApi::new(
                replica.clone(),
                hub.clone(),
                self.scheduler.clone(),
            )))
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            });
        let grpc = tokio::spawn(async move { grpc.await.map_err(|e| format!("grpc server: {e}")) });

        shutdown.await;
        let stop_started = std::time::Instant::now();
        tracing::info!("shutting down");
        supervisor.abort();
        elections.abort();
        leader_changes.abort();
        // A leader hands over while its port still answers (UNAVAILABLE, so
        // clients retry elsewhere). Anyone else stops taking calls and lets
        // the ones in flight finish before Raft stops under them.
        let stopped = if replica.is_leader() {
            let started = std::time::Instant::now();
            let handed = super::handoff::step_down(&replica, &hub, replica.election.lease()).await;
            tracing::info!(
                successor = ?handed.successor,
                caught_up = handed.caught_up,
                took_ms = started.elapsed().as_millis() as u64,
                "stepped down"
            );
            let _ = stop_tx.send(true);
            Ok(())
        } else {
            replica
                .stopping
                .store(true, std::sync::atomic::Ordering::Release);
            let _ = stop_tx.send(true);
            // Long-lived streams (watches) would hold it forever: bounded.
            while !grpc.is_finished() && stop_started.elapsed() < DRAIN_WAIT {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            replica
                .raft
                .shutdown()
                .await
                .map_err(|e| format!("raft shutdown: {e}"))
        };
        let watermark = self.watermark;
        let _ = tokio::task::spawn_blocking(move || watermark.sync()).await;
        // Long-lived streams (watches) hold a graceful shutdown open: bounded.
        let g = match tokio::time::timeout(DRAIN_WAIT, grpc).await {
            Ok(joined) => joined.map_err(|e| e.to_string())?,
            Err(_) => Ok(()),
        };
        let h = match tokio::time::timeout(DRAIN_WAIT, http).await {
            Ok(joined) => joined.map_err(|e| e.to_string())?,
            Err(_) => Ok(()),
        };
        g?;
        h?;
        stopped
    }
}
