//! The one interceptor: a tower layer in front of every gRPC service that
//! names the caller (bearer token, else client certificate), checks the
//! method against [`super::authz::TABLE`], and hands the handler the
//! [`Principal`] in the request's extensions. Refusals never reach a
//! decoder: UNAUTHENTICATED without valid credentials, PERMISSION_DENIED for
//! a role the table does not allow.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use autoglm_client::security::{CertIdentity, Role, AUTHORIZATION_METADATA};
use tonic::Status;

use super::authz::{access, Access};
use super::tls::PeerInfo;
use crate::replica::{wall_clock_ms, Replica};

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Certificate(CertIdentity),
    /// A token, by accessor.
    Token(String),
    /// `--insecure`: nobody is authenticated and everyone acts as admin.
    Insecure,
    /// Forwarded by member replica `by`, which authenticated the caller.
    Forwarded {
        by: u64,
    },
}

/// Request metadata with which a replica forwarding a call names the
/// principal it acts for (`<role> <name>`). Accepted only from a replica of
/// the current membership.
pub const ON_BEHALF_OF_METADATA: &str = "x-autoglm-on-behalf-of";

/// Marks `request` as made for `principal`.
pub fn act_for<T>(request: &mut tonic::Request<T>, principal: &Principal) -> Result<(), Status> {
    let value =
        tonic::metadata::MetadataValue::try_from(format!("{} {}", principal.role, principal.name))
            .map_err(|_| Status::internal("principal name is not valid metadata"))?;
    request.metadata_mut().insert(ON_BEHALF_OF_METADATA, value);
    Ok(())
}

impl Principal {
    /// The principal a handler was given by the gate.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Status::internal("request reached a handler without passing the gate"))
    }

    /// Acts on any job, not only its own.
    pub fn acts_on_any_job(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Operator)
    }

    /// Reads any job, not only its own.
    pub fn reads_any_job(&self) -> bool {
        self.role != Role::Submitter
    }

    /// The node an agent certificate names.
    pub fn agent_node(&self) -> Option<&str> {
        match &self.via {
            Via::Certificate(CertIdentity::Agent { node, .. }) => Some(node),
            _ => None,
        }
    }
}

/// Decides who a request comes from and whether it may go on.
pub struct Gate {
    replica: Arc<Replica>,
    /// False only under `--insecure`.
    enforce: bool,
}

impl Gate {
    pub fn new(replica: Arc<Replica>, enforce: bool) -> Arc<Self> {
        Arc::new(Self { replica, enforce })
    }

    pub fn check(
        &self,
        path: &str,
        peer: Option<&PeerInfo>,
        authorization: Option<&http::HeaderValue>,
        on_behalf_of: Option<&http::HeaderValue>,
    ) -> Result<Principal, Status> {
        if !self.enforce {
            return Ok(Principal {
                name: "anonymous".into(),
                role: Role::Admin,
                via: Via::Insecure,
            });
        }
        let rule = access(path).ok_or_else(|| {
            Status::permission_denied(format!(
                "{}: not in the authorization table",
                super::quote(path)
            ))
        })?;
        let mut principal = self.authenticate(peer, authorization)?;
        if let Some(value) = on_behalf_of {
            principal = self.forwarded(principal, value)?;
        }
        match rule {
            Access::Roles(roles) if roles.contains(&principal.role) => Ok(principal),
            Access::Roles(_) => Err(Status::permission_denied(format!(
                "{path}: role {} of '{}' may not call it",
                principal.role, principal.name
            ))),
            Access::Member => self.member(principal, path),
        }
    }

    fn authenticate(
        &self,
        peer: Option<&PeerInfo>,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<Principal, Status> {
        if let Some(value) = authorization {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "metadata {AUTHORIZATION_METADATA}: expected 'Bearer <token>'"
                    ))
                })?;
            let state = self.replica.state.read();
            let record = state
                .state
                .acl
                .verify(token.trim(), wall_clock_ms())
                .map_err(|why| Status::unauthenticated(why.as_str()))?;
            let accessor = crate::scheduler::acl::accessor_of(token.trim()).unwrap_or_default();
            return Ok(Principal {
                name: record.name.clone(),
                role: record.role,
                via: Via::Token(accessor.to_string()),
            });
        }
        match peer.and_then(|p| p.cert.clone()) {
            Some(id) => Ok(Principal {
                name: id.name(),
                role: id.role(),
                via: Via::Certificate(id),
            }),
            None => Err(Status::unauthenticated(
                "no credentials: present a client certificate of this cluster's CA or a bearer token",
            )),
        }
    }

    /// The principal a member replica forwards a call for.
    fn forwarded(
        &self,
        replica: Principal,
        value: &http::HeaderValue,
    ) -> Result<Principal, Status> {
        let by = match &replica.via {
            Via::Certificate(CertIdentity::Replica { id, .. }) => *id,
            _ => {
                return Err(Status::permission_denied(format!(
                    "metadata {ON_BEHALF_OF_METADATA}: only replicas of this cluster act for others"
                )))
            }
        };
        self.member(replica, ON_BEHALF_OF_METADATA)?;
        let malformed = || {
            Status::invalid_argument(format!(
                "metadata {ON_BEHALF_OF_METADATA}: expected '<role> <name>'"
            ))
        };
        let (role, name) = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .ok_or_else(malformed)?;
        let role = Role::parse_user(role).map_err(|_| malformed())?;
        Ok(Principal {
            name: name.to_string(),
            role,
            via: Via::Forwarded { by },
        })
    }

    /// Replica protocol: replicas of this replica's membership. While this
    /// replica follows no leader of its membership (it is new, it is catching
    /// up from a log older than the latest membership change, or an election
    /// is under way), any replica of the cluster: a replica added after this
    /// one's view, now leading, must be able to bring it up to date (found by
    /// jepsen: a re-added learner replaying old memberships refused the new
    /// leader for ever).
    fn member(&self, principal: Principal, path: &str) -> Result<Principal, Status> {
        let Via::Certificate(CertIdentity::Replica { id, .. }) = &principal.via else {
            return Err(Status::permission_denied(format!(
                "{path}: only replicas of this cluster may call it"
            )));
        };
        // Every Raft RPC passes here: look at the membership in place.
        let admitted = {
            let metrics = self.replica.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            let is_member = |n: u64| membership.nodes().any(|(m, _)| *m == n);
            let follows_a_member = metrics.current_leader.is_some_and(is_member);
            is_member(*id) || !follows_a_member
        };
        if admitted {
            Ok(principal)
        } else {
            Err(Status::permission_denied(format!(
                "{path}: replica {id} is not a member of this cluster"
            )))
        }
    }
}

/// The layer that puts a [`Gate`] in front of a service.
#[derive(Clone)]
pub struct GateLayer(pub Arc<Gate>);

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            gate: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct GateService<S> {
    gate: Arc<Gate>,
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for GateService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let checked = self.gate.check(
            request.uri().path(),
            request.extensions().get::<PeerInfo>(),
            request.headers().get(AUTHORIZATION_METADATA),
            request.headers().get(ON_BEHALF_OF_METADATA),
        );
        match checked {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                // The clone is ready only if polled; take the ready one.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}
