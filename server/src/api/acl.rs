//! `autoglm.v1.AclService`: user tokens and `WhoAmI`. The secret of a token
//! is drawn here, shown once in the response, and only its hash is proposed.

use std::sync::Arc;

use autoglm_client::proto::acl_service_server::AclService;
use autoglm_client::proto::{
    BootstrapRequest, CreateTokenRequest, CreateTokenResponse, ListTokensRequest,
    ListTokensResponse, RevokeTokenRequest, RevokeTokenResponse, TokenInfo, WhoAmIRequest,
    WhoAmIResponse,
};
use autoglm_client::security::identity::check_name;
use autoglm_client::security::Role;
use tonic::{Request, Response, Status};

use super::{replica_status, request_id};
use crate::replica::{wall_clock_ms, Replica};
use crate::scheduler::acl::{format_token, token_hash, TokenRecord};
use crate::scheduler::limits::TOKEN_TTL_SECONDS_MAX;
use crate::scheduler::requests::RequestId;
use crate::scheduler::{Command, Response as Applied};
use crate::security::{Principal, Via};

pub struct AclApi {
    replica: Arc<Replica>,
}

fn info(accessor: &str, t: &TokenRecord) -> TokenInfo {
    TokenInfo {
        accessor: accessor.to_string(),
        name: t.name.clone(),
        role: t.role.to_string(),
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
    }
}

impl AclApi {
    pub fn new(replica: Arc<Replica>) -> Self {
        Self { replica }
    }

    /// Draws a token, proposes its hash and returns the secret once.
    ///
    /// The accessor comes from the request id, so every try of one request
    /// names the same token. A try that meets a token of its own accessor
    /// with another hash is a retry whose first try was applied but never
    /// answered: that secret is lost with the answer, so the orphan is
    /// revoked and a token made anew, and no live token is left that nobody
    /// holds.
    async fn create<T>(
        &self,
        request: &Request<T>,
        name: &str,
        role: Role,
        ttl_seconds: u64,
        bootstrap: bool,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        check_name("name", name).map_err(Status::invalid_argument)?;
        if ttl_seconds > TOKEN_TTL_SECONDS_MAX {
            return Err(Status::invalid_argument(format!(
                "ttl_seconds: {ttl_seconds} exceeds {TOKEN_TTL_SECONDS_MAX}"
            )));
        }
        let (mut id, mut bootstrap) = (request_id(request)?, bootstrap);
        // The second round runs only after an orphan was revoked; its fresh
        // request id cannot meet one again.
        for _ in 0..2 {
            let now = wall_clock_ms();
            let accessor = accessor_of(id);
            let secret = format_token(accessor, rand::random());
            let accessor = format!("{accessor:016x}");
            let record = TokenRecord {
                name: name.to_string(),
                role,
                secret_sha256: token_hash(&secret),
                created_ms: now,
                expires_ms: (ttl_seconds > 0).then(|| now + ttl_seconds * 1000),
            };
            let command = Command::CreateToken {
                accessor: accessor.clone(),
                token: record.clone(),
                bootstrap,
            };
            let applied = self
                .replica
                .propose(command, Some(id))
                .await
                .map_err(replica_status)?;
            // Read back even after a refusal: a retry applied anew (its first
            // answer had left the recent-responses window) is refused as
            // "taken" or "already bootstrapped" by its own first try.
            match (applied, self.stored_hash(&accessor).await?) {
                (Applied::Done, Some(hash)) if hash == record.secret_sha256 => {
                    return Ok(Response::new(CreateTokenResponse {
                        info: Some(info(&accessor, &record)),
                        secret,
                    }))
                }
                (Applied::Done | Applied::Rejected(_), Some(_)) => {
                    tracing::warn!(
                        accessor,
                        "an earlier try created this token and its answer was lost; revoking it"
                    );
                    let revoke = Command::RevokeToken {
                        accessor: accessor.clone(),
                    };
                    self.replica
                        .propose(revoke, Some(rand::random()))
                        .await
                        .map_err(replica_status)?;
                    // The caller may bootstrap, so it is an admin: the
                    // cluster is bootstrapped now, and the new token is an
                    // ordinary admin token.
                    (id, bootstrap) = (rand::random(), false);
                }
                (Applied::Done, None) => {
                    return Err(Status::aborted(format!(
                        "token {accessor} was revoked before its creation was answered; \
                         create another"
                    )))
                }
                (Applied::Rejected(reason), None) if bootstrap => {
                    return Err(Status::failed_precondition(reason))
                }
                (Applied::Rejected(reason), None) => return Err(Status::invalid_argument(reason)),
                (other, _) => {
                    return Err(Status::internal(format!("unexpected response {other:?}")))
                }
            }
        }
        Err(Status::aborted(
            "token creation met a lost answer twice; create another",
        ))
    }

    /// The secret hash stored under `accessor`, once this replica has applied
    /// everything committed so far.
    async fn stored_hash(&self, accessor: &str) -> Result<Option<[u8; 32]>, Status> {
        self.replica
            .read_barrier(false)
            .await
            .map_err(replica_status)?;
        let applied = self.replica.state.read();
        Ok(applied
            .state
            .acl
            .tokens
            .get(accessor)
            .map(|t| t.secret_sha256))
    }
}

/// A token's accessor drawn from the request that creates it.
fn accessor_of(id: RequestId) -> u64 {
    (id as u64) ^ ((id >> 64) as u64)
}

#[tonic::async_trait]
impl AclService for AclApi {
    async fn bootstrap(
        &self,
        request: Request<BootstrapRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let name = match request.get_ref().name.as_str() {
            "" => "root".to_string(),
            n => n.to_string(),
        };
        self.create(&request, &name, Role::Admin, 0, true).await
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let req = request.get_ref();
        let role = Role::parse_user(&req.role)
            .map_err(|e| Status::invalid_argument(format!("role: {e}")))?;
        let (name, ttl) = (req.name.clone(), req.ttl_seconds);
        self.create(&request, &name, role, ttl, false).await
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let _ = request;
        self.replica
            .read_barrier(false)
            .await
            .map_err(replica_status)?;
        let applied = self.replica.state.read();
        let tokens = applied
            .state
            .acl
            .tokens
            .iter()
            .map(|(a, t)| info(a, t))
            .collect();
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let id = request_id(&request)?;
        let accessor = request.into_inner().accessor;
        let hex16 = accessor.len() == 16 && accessor.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex16 {
            return Err(Status::invalid_argument(format!(
                "accessor: {} is not 16 hex digits",
                crate::security::quote(&accessor)
            )));
        }
        match self
            .replica
            .propose(Command::RevokeToken { accessor }, Some(id))
            .await
            .map_err(replica_status)?
        {
            Applied::Done => Ok(Response::new(RevokeTokenResponse {})),
            Applied::NotFound(what) => Err(Status::not_found(format!("accessor: no {what}"))),
            other => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let p = Principal::of(&request)?;
        let via = match p.via {
            Via::Certificate(_) => "certificate",
            Via::Token(_) => "token",
            Via::Insecure => "insecure",
            Via::Forwarded { .. } => "forwarded",
        };
        Ok(Response::new(WhoAmIResponse {
            name: p.name,
            role: p.role.to_string(),
            via: via.into(),
        }))
    }
}
