//! HTTP on its own port: `/healthz` (the process and its raft core run) and
//! `/readyz` (a member of a cluster that has a leader).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::replica::Replica;

pub fn router(replica: Arc<Replica>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(replica)
}

async fn healthz(State(replica): State<Arc<Replica>>) -> (StatusCode, String) {
    match &replica.raft.metrics().borrow().running_state {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(fatal) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {fatal}\n"),
        ),
    }
}

async fn readyz(State(replica): State<Arc<Replica>>) -> (StatusCode, String) {
    let metrics = replica.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    if metrics.running_state.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "raft stopped\n".into());
    }
    if membership.get_node(&replica.id).is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not a member of any cluster yet\n".into(),
        );
    }
    match metrics.current_leader {
        Some(leader) => (StatusCode::OK, format!("ready; leader {leader}\n")),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader known\n".into()),
    }
}
