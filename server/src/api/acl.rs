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
        let now = wall_clock_ms();
        let accessor_bits: u64 = rand::random();
        let secret = format_token(accessor_bits, rand::random());
        let accessor = format!("{accessor_bits:016x}");
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
        match self
            .replica
            .propose(command, Some(request_id(request)?))
            .await
            .map_err(replica_status)?
        {
            Applied::Done => Ok(Response::new(CreateTokenResponse {
                info: Some(info(&accessor, &record)),
                secret,
            })),
            Applied::Rejected(reason) if bootstrap => Err(Status::failed_precondition(reason)),
            Applied::Rejected(reason) => Err(Status::invalid_argument(reason)),
            other => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }
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
