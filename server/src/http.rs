//! HTTP on its own port: `/metrics` (Prometheus, `metrics.rs`), `/healthz`
//! (the process and its raft core run), `/readyz` (a member of a cluster
//! that has a leader) and the web dashboard under `/ui/` (`dashboard/`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::replica::Replica;

pub fn router(
    replica: Arc<Replica>,
    registry: Registry,
    dashboard: Arc<crate::dashboard::Dashboard>,
) -> Router {
    let registry = Arc::new(registry);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(replica)
        .route("/metrics", get(move || metrics(registry.clone())))
        .merge(crate::dashboard::router(dashboard))
}

async fn metrics(registry: Arc<Registry>) -> axum::response::Response {
    // The state's read lock is taken while rendering: off the async workers.
    let rendered =
        tokio::task::spawn_blocking(move || autoglm_runtime::exposition::render(&registry)).await;
    match rendered {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(CONTENT_TYPE, autoglm_runtime::exposition::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n")).into_response(),
    }
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
