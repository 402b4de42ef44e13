//! Samples every replica's Raft status a few times a second for the cluster
//! checker (one leader per term, nothing goes backwards) and the report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

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
}

pub type Samples = Arc<Mutex<Vec<Sample>>>;

/// Polls `replicas` (host name, address) every `period` until `stop`.
pub async fn run(
    replicas: Vec<(String, String)>,
    recorder: Arc<Recorder>,
    samples: Samples,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let addrs: Vec<String> = replicas.iter().map(|(_, a)| a.clone()).collect();
    while !*stop.borrow() {
        let statuses =
            crate::control::statuses(&addrs, period.max(Duration::from_millis(200))).await;
        let now = recorder.now_ns();
        {
            let mut out = samples.lock().unwrap_or_else(|p| p.into_inner());
            for ((node, _), s) in replicas.iter().zip(statuses) {
                let Some(s) = s else { continue };
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
                });
            }
        }
        let _ = tokio::time::timeout(period, stop.wait_for(|s| *s)).await;
    }
}
