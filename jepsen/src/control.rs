//! Asking the replicas about themselves, with short timeouts so a paused or
//! partitioned replica only costs its timeout.

use std::time::Duration;

use autoglm_client::proto::admin_service_client::AdminServiceClient;
use autoglm_client::proto::{StatusRequest, StatusResponse};
use autoglm_client::security::Transport;
use autoglm_client::{Client, ClientOptions};

/// Status of one replica, or `None` if it did not answer within `timeout`.
pub async fn status(addr: &str, timeout: Duration) -> Option<StatusResponse> {
    let transport = crate::credentials::admin().ok()?.transport;
    let endpoint = Transport::endpoint(addr)
        .ok()?
        .connect_timeout(timeout)
        .timeout(timeout);
    let call = async {
        let channel = transport.connect(endpoint).await.ok()?;
        AdminServiceClient::new(channel)
            .status(StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    tokio::time::timeout(timeout, call).await.ok().flatten()
}

/// Status of every replica, in the order given, asked in parallel.
pub async fn statuses(addrs: &[String], timeout: Duration) -> Vec<Option<StatusResponse>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, addr) in addrs.iter().enumerate() {
        let addr = addr.clone();
        set.spawn(async move { (i, status(&addr, timeout).await) });
    }
    let mut out = vec![None; addrs.len()];
    while let Some(Ok((i, s))) = set.join_next().await {
        out[i] = s;
    }
    out
}

/// A client library handle on `endpoints` (tried in order), giving up on a
/// call after `deadline` and on one attempt after `attempt`.
pub fn client(
    endpoints: Vec<String>,
    deadline: Duration,
    attempt: Duration,
) -> anyhow::Result<Client> {
    client_from(endpoints, deadline, attempt, None, None)
}

/// [`client`] with `credentials`, connecting from `local_address`.
pub fn client_from(
    endpoints: Vec<String>,
    deadline: Duration,
    attempt: Duration,
    local_address: Option<std::net::IpAddr>,
    credentials: Option<autoglm_client::security::Credentials>,
) -> anyhow::Result<Client> {
    let options = ClientOptions {
        deadline,
        attempt_timeout: attempt,
        connect_timeout: Duration::from_millis(500),
        credentials: match credentials {
            Some(c) => c,
            None => crate::credentials::admin()?,
        },
        local_address,
    };
    Ok(Client::new(endpoints, options)?)
}
