//! Tokens and the caller's identity through [`Client`].

use crate::client::{fresh_request_id, with_request_id, Retry};
use crate::proto::acl_service_client::AclServiceClient;
use crate::proto::*;
use crate::{Client, ClientError};

impl Client {
    /// Creates the cluster's first admin token (once per cluster; needs an
    /// admin certificate). The secret is in the response and nowhere else.
    pub async fn acl_bootstrap(&self, name: &str) -> Result<CreateTokenResponse, ClientError> {
        let req = BootstrapRequest {
            name: name.to_string(),
        };
        let id = fresh_request_id();
        self.with_retry_on(Retry::Idempotent, |ch| {
            let req = with_request_id(req.clone(), &id);
            async move { AclServiceClient::new(ch).bootstrap(req).await }
        })
        .await
    }

    /// Creates a token for principal `name` with `role`; `ttl_seconds` 0 never expires.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        ttl_seconds: u64,
    ) -> Result<CreateTokenResponse, ClientError> {
        let req = CreateTokenRequest {
            name: name.to_string(),
            role: role.to_string(),
            ttl_seconds,
        };
        let id = fresh_request_id();
        self.with_retry_on(Retry::Idempotent, |ch| {
            let req = with_request_id(req.clone(), &id);
            async move { AclServiceClient::new(ch).create_token(req).await }
        })
        .await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.with_retry_on(Retry::Idempotent, |ch| async move {
            AclServiceClient::new(ch)
                .list_tokens(ListTokensRequest {})
                .await
        })
        .await
        .map(|r| r.tokens)
    }

    pub async fn revoke_token(&self, accessor: &str) -> Result<(), ClientError> {
        let req = RevokeTokenRequest {
            accessor: accessor.to_string(),
        };
        let id = fresh_request_id();
        self.with_retry_on(Retry::Idempotent, |ch| {
            let req = with_request_id(req.clone(), &id);
            async move { AclServiceClient::new(ch).revoke_token(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Who the replica that answers takes the caller to be.
    pub async fn who_am_i(&self) -> Result<WhoAmIResponse, ClientError> {
        self.with_retry_on(Retry::Idempotent, |ch| async move {
            AclServiceClient::new(ch).who_am_i(WhoAmIRequest {}).await
        })
        .await
    }
}
