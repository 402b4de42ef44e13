//! Samples every replica's Raft status a few times a second for the cluster
//! checker (one leader per term, nothing goes backwards) and the report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use crate::db::Db;

use crate::recorder::Recorder;

/// One replica's status at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub time_ns: u64,
    /// Host name.
    pub node: String,
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub last_log: Option<u64>,
    pub digest: u64,
    /// Which process on the host answered (see [`crate::db::Replica::incarnation`]).
    #[serde(default)]
    pub incarnation: u32,
}

pub type Samples = Arc<StdMutex<Vec<Sample>>>;

async fn incarnations(db: &Mutex<Db>) -> BTreeMap<String, u32> {
    let db = db.lock().await;
    db.replicas
        .iter()
        .map(|(name, r)| (name.clone(), r.incarnation()))
        .collect()
}

/// Polls `replicas` (host name, address) every `period` until `stop`.
pub async fn run(
    db: Arc<Mutex<Db>>,
    replicas: Vec<(String, String)>,
    recorder: Arc<Recorder>,
    samples: Samples,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let addrs: Vec<String> = replicas.iter().map(|(_, a)| a.clone()).collect();
    while !*stop.borrow() {
        let before = incarnations(&db).await;
        let statuses =
            crate::control::statuses(&addrs, period.max(Duration::from_millis(200))).await;
        let after = incarnations(&db).await;
        let now = recorder.now_ns();
        {
            let mut out = samples.lock().unwrap_or_else(|p| p.into_inner());
            for ((node, _), s) in replicas.iter().zip(statuses) {
                let Some(s) = s else { continue };
                // Restarted while asked: which process answered is unknown.
                let Some(incarnation) = after.get(node).filter(|i| before.get(node) == Some(*i))
                else {
                    continue;
                };
                out.push(Sample {
                    time_ns: now,
                    node: node.clone(),
                    id: s.id,
                    role: autoglm_client::role_name(s.role).to_string(),
                    term: s.term,
                    leader_id: s.leader_id,
                    committed: s.committed_index,
                    applied: s.applied_index,
                    last_log: s.last_log_index,
                    digest: s.state_digest,
                    incarnation: *incarnation,
                });
            }
        }
        let _ = tokio::time::timeout(period, stop.wait_for(|s| *s)).await;
    }
}
