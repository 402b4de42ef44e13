//! Every member's own view (role, term, applied index, state digest), asked
//! with `AdminService/Status` over the replicas' own channels, at most every
//! [`REFRESH`] however many pages are open: digests that differ at the same
//! applied index are how a diverged replica shows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use autoglm_client::proto::admin_service_client::AdminServiceClient;
use autoglm_client::proto::{StatusRequest, StatusResponse};
use tokio::sync::Mutex;

use crate::replica::Replica;

const REFRESH: Duration = Duration::from_secs(1);
/// How long one member has to answer.
const ASK_WAIT: Duration = Duration::from_secs(1);

/// A member's answer, or why there is none.
pub type MemberStatus = Result<StatusResponse, String>;

#[derive(Default)]
pub struct MemberStatuses {
    last: Mutex<Option<(Instant, BTreeMap<u64, MemberStatus>)>>,
}

impl MemberStatuses {
    pub async fn get(&self, replica: &Replica) -> BTreeMap<u64, MemberStatus> {
        let mut last = self.last.lock().await;
        if let Some((at, statuses)) = last.as_ref() {
            if at.elapsed() < REFRESH {
                return statuses.clone();
            }
        }
        let statuses = ask(replica).await;
        *last = Some((Instant::now(), statuses.clone()));
        statuses
    }
}

async fn ask(replica: &Replica) -> BTreeMap<u64, MemberStatus> {
    let members: Vec<(u64, String)> = {
        let metrics = replica.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    };
    let asks = members.into_iter().map(|(id, addr)| async move {
        if id == replica.id {
            return (id, Ok(crate::api::status::status(replica)));
        }
        let channel = match replica.peers.channel(&addr) {
            Ok(c) => c,
            Err(e) => return (id, Err(e.to_string())),
        };
        let mut client = AdminServiceClient::new(channel);
        let asked = client.status(StatusRequest {});
        let answer = match tokio::time::timeout(ASK_WAIT, asked).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(format!("unreachable: {}", status.message())),
            Err(_) => Err(format!(
                "unreachable: no answer within {} ms",
                ASK_WAIT.as_millis()
            )),
        };
        (id, answer)
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .collect()
}
