use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::config_service_client::ConfigServiceClient;
use crate::proto::*;
use crate::security::{BearerToken, Credentials, Transport};
use crate::{ClientError, LEADER_ADDR_METADATA};

/// A channel to one replica that adds the client's token to every call.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TLS (or, only when asked for, plaintext) and the token to present.
    pub credentials: Credentials,
    /// How long one call may keep retrying across replicas.
    pub deadline: Duration,
    /// Per-attempt timeout.
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
    /// Source address of the client's connections (default: the OS picks).
    pub local_address: Option<std::net::IpAddr>,
}

impl ClientOptions {
    /// Default timeouts with `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(500),
            local_address: None,
        }
    }
}

/// A handle on a cluster. Cheap to share behind an `Arc`; channels are opened
/// lazily, once per address, and reused.
pub struct Client {
    endpoints: Vec<String>,
    options: ClientOptions,
    channels: Mutex<HashMap<String, Channel>>,
    /// Index (into the tried list) of the replica that answered last: tried first next time.
    preferred: AtomicUsize,
    /// A leader address learned from a hint, tried before the configured list.
    leader_hint: Mutex<Option<String>>,
    token: BearerToken,
}

/// Which failures a call may be retried on elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Only when nothing was done: the replica was unreachable, had no leader
    /// or was not the leader.
    Unavailable,
    /// Also when the outcome is unknown (connection reset, timeout, a stream
    /// broken in the HTTP/2 transport): for reads and for writes made
    /// idempotent by a key or a request id (`apply` answers a request id it
    /// has seen with the first answer).
    Idempotent,
}

impl Retry {
    fn allows(self, status: &Status) -> bool {
        match self {
            Retry::Unavailable => status.code() == Code::Unavailable,
            Retry::Idempotent => {
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                ) || broke_in_transport(status)
            }
        }
    }
}

/// Whether the call broke in the HTTP/2 transport rather than being answered:
/// tonic reports a stream or connection the replica dropped while it stopped
/// as INTERNAL ("h2 protocol error"), with the h2 error as its source. Its
/// outcome is unknown, as after a connection reset; an INTERNAL the replica
/// sent itself has no such source and is not retried.
fn broke_in_transport(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<h2::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A fresh id for one logical write, sent on every retry of it.
pub(crate) fn fresh_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `message` as a request carrying the write's request id.
pub(crate) fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(id) {
        request.metadata_mut().insert(crate::REQUEST_ID_METADATA, v);
    }
    request
}

fn leader_hint(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_ADDR_METADATA)?
        .to_str()
        .ok()
        .map(str::to_string)
}

impl Client {
    pub fn new<I, S>(endpoints: I, options: ClientOptions) -> Result<Self, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(Into::into)
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let token = BearerToken::new(options.credentials.token.as_deref())
            .map_err(ClientError::InvalidCredentials)?;
        let client = Self {
            token,
            endpoints,
            options,
            channels: Mutex::new(HashMap::new()),
            preferred: AtomicUsize::new(0),
            leader_hint: Mutex::new(None),
        };
        for e in &client.endpoints {
            client.channel(e)?;
        }
        Ok(client)
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The channel to one address, created on first use, carrying the token.
    pub fn channel(&self, addr: &str) -> Result<AuthChannel, ClientError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let endpoint =
                    Transport::endpoint(addr).map_err(|reason| ClientError::InvalidEndpoint {
                        endpoint: addr.to_string(),
                        reason,
                    })?;
                let endpoint = endpoint
                    .connect_timeout(self.options.connect_timeout)
                    .timeout(self.options.attempt_timeout)
                    .local_address(self.options.local_address);
                let channel = self.options.credentials.transport.connect_lazy(endpoint);
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(InterceptedService::new(channel, self.token.clone()))
    }

    /// Admin stub bound to one replica, for calls about that replica itself.
    pub fn admin_at(&self, addr: &str) -> Result<AdminServiceClient<AuthChannel>, ClientError> {
        Ok(AdminServiceClient::new(self.channel(addr)?))
    }

    /// Runs `call` against replicas until one answers with something other than
    /// "unavailable", following leader hints, until the deadline.
    /// [`Self::with_retry_on`] for calls that must not run twice.
    pub(crate) async fn with_retry<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(AuthChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.with_retry_on(Retry::Unavailable, call).await
    }

    pub(crate) async fn with_retry_on<T, F, Fut>(
        &self,
        retry: Retry,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(AuthChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        let mut attempt = 0usize;
        loop {
            let hint = self
                .leader_hint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let start = self.preferred.load(Ordering::Relaxed);
            let addr = hint.unwrap_or_else(|| {
                self.endpoints[(start + attempt) % self.endpoints.len()].clone()
            });
            let status = match call(self.channel(&addr)?).await {
                Ok(response) => {
                    if let Some(i) = self.endpoints.iter().position(|e| *e == addr) {
                        self.preferred.store(i, Ordering::Relaxed);
                    }
                    return Ok(response.into_inner());
                }
                Err(status) if retry.allows(&status) => status,
                Err(status) => return Err(ClientError::Rpc(status)),
            };
            if let Some(leader) = leader_hint(&status) {
                *self.leader_hint.lock().unwrap_or_else(|e| e.into_inner()) = Some(leader);
            }
            attempt += 1;
            let waited = started.elapsed();
            if waited >= self.options.deadline {
                return Err(ClientError::Unavailable {
                    waited_ms: waited.as_millis() as u64,
                    last: status,
                });
            }
            // Try every replica once quickly, then back off between rounds.
            if attempt.is_multiple_of(self.endpoints.len()) {
                tokio::time::sleep(backoff.min(self.options.deadline.saturating_sub(waited))).await;
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
        }
    }

    pub async fn config_get(
        &self,
        key: &str,
        stale: bool,
    ) -> Result<ConfigGetResponse, ClientError> {
        let req = ConfigGetRequest {
            key: key.to_string(),
            stale,
        };
        self.with_retry_on(Retry::Idempotent, |ch| {
            let req = req.clone();
            async move { ConfigServiceClient::new(ch).get(req).await }
        })
        .await
    }

    pub async fn config_put(&self, key: &str, value: &str) -> Result<ConfigEntry, ClientError> {
        let req = ConfigPutRequest {
            key: key.to_string(),
            value: value.to_string(),
        };
        let id = fresh_request_id();
        let response = self
            .with_retry_on(Retry::Idempotent, |ch| {
                let req = with_request_id(req.clone(), &id);
                async move { ConfigServiceClient::new(ch).put(req).await }
            })
            .await?;
        response
            .entry
            .ok_or_else(|| ClientError::Rpc(Status::internal("server returned no entry")))
    }

    pub async fn config_cas(
        &self,
        key: &str,
        value: &str,
        expected_version: u64,
    ) -> Result<ConfigCasResponse, ClientError> {
        let req = ConfigCasRequest {
            key: key.to_string(),
            value: value.to_string(),
            expected_version,
        };
        let id = fresh_request_id();
        self.with_retry_on(Retry::Idempotent, |ch| {
            let req = with_request_id(req.clone(), &id);
            async move { ConfigServiceClient::new(ch).compare_and_set(req).await }
        })
        .await
    }

    /// Status of whichever replica answers first.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.with_retry_on(Retry::Idempotent, |ch| async move {
            AdminServiceClient::new(ch).status(StatusRequest {}).await
        })
        .await
    }

    /// Status of one given replica, without retries elsewhere.
    pub async fn status_of(&self, addr: &str) -> Result<StatusResponse, ClientError> {
        let mut admin = self.admin_at(addr)?;
        Ok(admin
            .status(StatusRequest {})
            .await
            .map_err(ClientError::Rpc)?
            .into_inner())
    }

    /// Forms the first membership, through the first configured endpoint.
    pub async fn init(&self, members: Vec<Member>) -> Result<(), ClientError> {
        let mut admin = self.admin_at(&self.endpoints[0])?;
        admin
            .init(InitRequest { members })
            .await
            .map_err(ClientError::Rpc)?;
        Ok(())
    }

    pub async fn add_learner(
        &self,
        member: Member,
        no_wait: bool,
    ) -> Result<MembershipResponse, ClientError> {
        let req = AddLearnerRequest {
            member: Some(member),
            no_wait,
        };
        self.with_retry(|ch| {
            let req = req.clone();
            async move { AdminServiceClient::new(ch).add_learner(req).await }
        })
        .await
    }

    pub async fn promote(&self, ids: Vec<u64>) -> Result<MembershipResponse, ClientError> {
        let req = PromoteRequest { ids };
        self.with_retry(|ch| {
            let req = req.clone();
            async move { AdminServiceClient::new(ch).promote(req).await }
        })
        .await
    }

    pub async fn remove(&self, ids: Vec<u64>) -> Result<MembershipResponse, ClientError> {
        let req = RemoveRequest { ids };
        self.with_retry(|ch| {
            let req = req.clone();
            async move { AdminServiceClient::new(ch).remove(req).await }
        })
        .await
    }

    /// Snapshots one replica (`addr`), waiting until it is built when asked.
    pub async fn trigger_snapshot(
        &self,
        addr: &str,
        wait: bool,
    ) -> Result<TriggerSnapshotResponse, ClientError> {
        let mut admin = self.admin_at(addr)?;
        Ok(admin
            .trigger_snapshot(TriggerSnapshotRequest { wait })
            .await
            .map_err(ClientError::Rpc)?
            .into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_broken_in_the_transport_is_retried_only_where_the_outcome_may_be_unknown() {
        let broken = Status::from_error(Box::new(h2::Error::from(h2::Reason::PROTOCOL_ERROR)));
        assert_eq!(broken.code(), Code::Internal);
        assert!(Retry::Idempotent.allows(&broken), "{broken:?}");
        assert!(!Retry::Unavailable.allows(&broken));
        let answered = Status::internal("a bug on the replica");
        assert!(!Retry::Idempotent.allows(&answered));
    }
}
