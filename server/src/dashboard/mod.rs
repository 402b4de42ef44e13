//! The web dashboard on the replica's HTTP port: `/ui/` serves a page built
//! into the binary (no build step), which reads everything else with a
//! bearer token sent as the `Authorization` header:
//!
//! - `GET /ui/api/events`: server-sent `view` events (`view.rs`), sent when
//!   this replica's Raft view or state changes, and each second for the
//!   leader's live readings and every member's own status (`members.rs`);
//! - `GET /ui/api/task/{id}`: one task, its attempts and why it waits;
//! - `GET /ui/api/task/{id}/output`: the latest attempt's kept output (the
//!   first [`OUTPUT_SHOWN`] bytes), relayed from its node by the leader;
//! - `POST /ui/api/task/{id}/cancel`, `POST /ui/api/node/{name}/drain`,
//!   `.../undrain`: the actions.
//!
//! Each endpoint is authorized as the gRPC method it stands for, by the same
//! gate and table (`security/authz.rs`), and runs that method's handler, so
//! a dashboard action can do exactly what the token could do through the
//! API. Viewing needs a role that reads every job (the page shows them all):
//! admin, operator or reader.

mod members;
mod view;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use autoglm_client::proto::{
    self as pb, scheduler_service_server::SchedulerService, CancelTaskRequest, GetTaskRequest,
    NodeRequest,
};
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

use crate::api::scheduler::SchedulerApi;
use crate::leader::hub::AgentHub;
use crate::replica::{wall_clock_ms, Replica};
use crate::security::{Gate, Principal};
pub use view::{view, RaftView};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Output bytes the task panel shows; `autoglm task logs` prints it all.
const OUTPUT_SHOWN: usize = 1024 * 1024;

/// Views are rebuilt at most this often while the state changes...
const VIEW_DEBOUNCE: Duration = Duration::from_millis(200);
/// ...and at least this often, for the leader's live readings.
const VIEW_REFRESH: Duration = Duration::from_secs(1);

pub struct Dashboard {
    replica: Arc<Replica>,
    hub: Arc<AgentHub>,
    gate: Arc<Gate>,
    api: SchedulerApi,
    members: members::MemberStatuses,
}

impl Dashboard {
    pub fn new(
        replica: Arc<Replica>,
        hub: Arc<AgentHub>,
        gate: Arc<Gate>,
        api: SchedulerApi,
    ) -> Arc<Self> {
        Arc::new(Self {
            replica,
            hub,
            gate,
            api,
            members: Default::default(),
        })
    }

    /// The caller, authorized as gRPC method `method` would be.
    fn principal(&self, headers: &HeaderMap, method: &str) -> Result<Principal, ApiError> {
        let path = format!("/autoglm.v1.SchedulerService/{method}");
        self.gate
            .check(&path, None, headers.get(AUTHORIZATION), None)
            .map_err(ApiError)
    }

    /// A caller who may see every job.
    fn viewer(&self, headers: &HeaderMap, method: &str) -> Result<Principal, ApiError> {
        let principal = self.principal(headers, method)?;
        if !principal.reads_any_job() {
            return Err(ApiError(tonic::Status::permission_denied(format!(
                "the dashboard shows every job; role {} of '{}' reads only its own (use a reader token)",
                principal.role, principal.name
            ))));
        }
        Ok(principal)
    }

    async fn current_view(&self) -> Value {
        let mut raft = self.raft_view();
        raft.statuses = self.members.get(&self.replica).await;
        let readings = self
            .hub
            .readings()
            .into_iter()
            .map(|r| (r.node, r.gpus))
            .collect();
        view(
            &self.replica.state.read().state,
            &raft,
            &readings,
            wall_clock_ms(),
        )
    }

    fn raft_view(&self) -> RaftView {
        let m = self.replica.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let last_log = m.last_log_index.unwrap_or(0);
        RaftView {
            replica: self.replica.id,
            role: match m.state {
                openraft::ServerState::Leader => "leader",
                openraft::ServerState::Candidate => "candidate",
                openraft::ServerState::Learner => "learner",
                openraft::ServerState::Follower => "follower",
                openraft::ServerState::Shutdown => "shutdown",
            },
            term: m.current_term,
            leader: m.current_leader,
            applied: m.last_applied.map_or(0, |l| l.index),
            last_log,
            members: membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone(), voters.contains(id)))
                .collect(),
            lag: m
                .replication
                .iter()
                .flatten()
                .map(|(id, matched)| (*id, last_log.saturating_sub(matched.map_or(0, |l| l.index))))
                .collect(),
            statuses: Default::default(),
        }
    }
}

pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|| asset("text/html; charset=utf-8", INDEX_HTML)),
        )
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/ui/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
        .route("/ui/api/events", get(events))
        .route("/ui/api/task/{id}", get(task))
        .route("/ui/api/task/{id}/output", get(task_output))
        .route("/ui/api/task/{id}/cancel", post(cancel_task))
        .route("/ui/api/node/{name}/{action}", post(node_action))
        .with_state(dashboard)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

/// A gRPC status as the dashboard's HTTP answer: the code mapped, the
/// message as `{"error": ...}`.
pub struct ApiError(tonic::Status);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use tonic::Code;
        let code = match self.0.code() {
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::FailedPrecondition | Code::AlreadyExists => StatusCode::CONFLICT,
            Code::Unavailable | Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, Json(json!({"error": self.0.message()}))).into_response()
    }
}

/// A request for a gRPC handler, made by `principal`.
fn as_grpc<T>(message: T, principal: Principal) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(principal);
    request
}

async fn events(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    d.viewer(&headers, "ListTasks")?;
    let (tx, rx) = mpsc::channel::<Event>(4);
    tokio::spawn(async move {
        let mut changes = d.replica.raft.metrics();
        let mut refresh = tokio::time::interval(VIEW_REFRESH);
        let mut last = String::new();
        loop {
            let view = d.current_view().await.to_string();
            if view != last {
                if tx
                    .send(Event::default().event("view").data(&view))
                    .await
                    .is_err()
                {
                    return;
                }
                last = view;
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(VIEW_DEBOUNCE).await;
                }
                _ = refresh.tick() => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default()))
}

async fn task(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let principal = d.viewer(&headers, "GetTask")?;
    let request = as_grpc(
        GetTaskRequest {
            task_id: id,
            stale: true,
        },
        principal,
    );
    let t = d
        .api
        .get_task(request)
        .await
        .map_err(ApiError)?
        .into_inner();
    Ok(Json(task_json(&t)))
}

async fn task_output(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let principal = d.viewer(&headers, "TaskOutput")?;
    let request = as_grpc(
        pb::TaskOutputRequest {
            task_id: id,
            ..Default::default()
        },
        principal,
    );
    let mut stream = d
        .api
        .task_output(request)
        .await
        .map_err(ApiError)?
        .into_inner();
    let (mut data, mut attempt, mut node) = (Vec::new(), 0, String::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ApiError)?;
        (attempt, node) = (chunk.attempt, chunk.node);
        data.extend_from_slice(&chunk.data);
        if data.len() >= OUTPUT_SHOWN {
            data.truncate(OUTPUT_SHOWN);
            break;
        }
    }
    Ok(Json(json!({
        "attempt": attempt, "node": node,
        "output": String::from_utf8_lossy(&data),
        "cut": data.len() >= OUTPUT_SHOWN,
    })))
}

fn task_json(t: &pb::Task) -> Value {
    let spec = t.spec.as_ref();
    json!({
        "id": t.id, "job_id": t.job_id, "name": spec.map(|s| s.name.clone()),
        "priority": spec.map(|s| s.priority),
        "state": autoglm_client::task_state_name(t.state), "attempt": t.attempt,
        "node": t.node, "gpus": t.gpus, "reason": t.reason, "message": t.message,
        "exit_code": t.exit_code, "output_tail": t.output_tail,
        "created_ms": t.created_ms, "started_ms": t.started_ms, "finished_ms": t.finished_ms,
        "waiting": t.waiting.as_ref().map(|w| w.summary.clone()),
        "attempts": t.attempts.iter().map(|a| json!({
            "attempt": a.attempt, "node": a.node, "gpus": a.gpus, "result": a.result,
            "exit_code": a.exit_code, "run_ms": a.run_ms,
        })).collect::<Vec<_>>(),
    })
}

async fn cancel_task(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let principal = d.principal(&headers, "CancelTask")?;
    let request = as_grpc(CancelTaskRequest { task_id: id }, principal);
    let r = d
        .api
        .cancel_task(request)
        .await
        .map_err(ApiError)?
        .into_inner();
    Ok(Json(json!({"changed_task_ids": r.changed_task_ids})))
}

async fn node_action(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let method = match action.as_str() {
        "drain" => "DrainNode",
        "undrain" => "UndrainNode",
        other => {
            return Err(ApiError(tonic::Status::not_found(format!(
                "action: {other:?} is not drain or undrain"
            ))))
        }
    };
    let principal = d.principal(&headers, method)?;
    let request = as_grpc(NodeRequest { name }, principal);
    let answer = match action.as_str() {
        "drain" => d.api.drain_node(request).await,
        _ => d.api.undrain_node(request).await,
    }
    .map_err(ApiError)?
    .into_inner();
    let node = answer.node.unwrap_or_default();
    Ok(Json(json!({"node": node.name, "admin": node.admin})))
}
