//! When a replica campaigns. openraft's own election timer is off
//! (`enable_elect: false`); this driver replaces it, for two reasons:
//!
//! - **Timing.** openraft 0.9 campaigns only after its leader lease
//!   (`election_timeout_max`) *plus* an election timeout drawn once at start,
//!   checked on a 1.5-heartbeat tick: 450–600 ms and more with 150–300 ms
//!   settings. Here a follower campaigns when it has heard from no leader for
//!   a timeout drawn afresh in `[election_timeout_min_ms,
//!   election_timeout_max_ms)` every time its timer restarts, checked every
//!   [`TICK`]. openraft's lease (the time a voter refuses votes after hearing
//!   from a leader) is set to `election_timeout_min_ms`, so by the time any
//!   timer fires, the voters grant votes again.
//! - **Pre-vote** (Raft thesis §9.6). Before it raises its term, a candidate
//!   asks the voters whether they would vote for it: a voter says yes only if
//!   it has not heard from a leader for the lease and the candidate's log is
//!   at least as up to date as its own. An isolated replica never gets a
//!   majority, so its term stays put and, when the partition heals, it
//!   rejoins without deposing the leader.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::{LogId, ServerState};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::replica::Replica;

/// How often the driver looks at its timer.
const TICK: Duration = Duration::from_millis(5);

/// The configured election timeouts; the lower bound is also the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTimeouts {
    pub min: Duration,
    pub max: Duration,
}

impl ElectionTimeouts {
    /// After hearing from a leader, a voter refuses votes (and pre-votes)
    /// this long: the shortest election timeout, as in the Raft thesis
    /// §4.2.3, so no timer fires while the lease still holds.
    pub fn lease(&self) -> Duration {
        self.min
    }

    /// A fresh random timeout in `[min, max)`.
    pub fn draw(&self, rng: &mut impl Rng) -> Duration {
        let (min, max) = (self.min.as_millis() as u64, self.max.as_millis() as u64);
        Duration::from_millis(rng.random_range(min..max.max(min + 1)))
    }
}

/// When this replica last heard from a leader it accepts (or granted a vote).
#[derive(Debug)]
pub struct LeaderContact(Mutex<Instant>);

impl Default for LeaderContact {
    fn default() -> Self {
        Self(Mutex::new(Instant::now()))
    }
}

impl LeaderContact {
    pub fn heard(&self, at: Instant) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *last = (*last).max(at);
    }

    pub fn last(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sent by a would-be candidate before it raises its term.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub last_log: Option<LogId<NodeId>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// Why not, for the logs.
    pub reason: String,
}

/// What a voter knows when it answers a pre-vote.
#[derive(Debug, Clone)]
pub struct VoterView {
    pub leading: bool,
    pub since_contact: Duration,
    pub lease: Duration,
    pub last_log: Option<LogId<NodeId>>,
}

/// The voter's answer; pure.
pub fn answer_pre_vote(request: &PreVoteRequest, voter: &VoterView) -> PreVoteResponse {
    let refuse = |reason: String| PreVoteResponse {
        granted: false,
        reason,
    };
    if voter.leading {
        return refuse("this replica is the leader".into());
    }
    if voter.since_contact < voter.lease {
        return refuse(format!(
            "heard from a leader {} ms ago (lease {} ms)",
            voter.since_contact.as_millis(),
            voter.lease.as_millis()
        ));
    }
    // `Option<LogId>` orders by (term, index), None first: Raft's "at least as up to date".
    if request.last_log < voter.last_log {
        return refuse(format!(
            "candidate's log {:?} is behind this replica's {:?}",
            request.last_log, voter.last_log
        ));
    }
    PreVoteResponse {
        granted: true,
        reason: String::new(),
    }
}

/// What the driver should do at one tick; pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet.
    Wait,
    /// Sole voter with no leader: elect at once, no one to ask.
    ElectAlone,
    /// The timer ran out: ask the voters, then elect on a majority.
    PreVote,
}

/// What the driver sees of its own replica at one tick.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    pub state: ServerState,
    pub voter: bool,
    pub voters: usize,
    /// Since the later of the last leader contact and the last campaign.
    pub quiet: Duration,
    /// This round's random timeout.
    pub timeout: Duration,
}

pub fn step(local: &Local) -> Step {
    let alone = local.voters == 1 && local.state != ServerState::Candidate;
    match local.state {
        // A candidate whose election failed (split vote) tries again when its
        // new timeout runs out, like a follower.
        ServerState::Leader | ServerState::Shutdown => Step::Wait,
        _ if !local.voter => Step::Wait,
        _ if alone => Step::ElectAlone,
        _ if local.quiet >= local.timeout => Step::PreVote,
        _ => Step::Wait,
    }
}

/// Runs the driver until the replica's Raft stops.
pub fn spawn(replica: Arc<Replica>, timeouts: ElectionTimeouts) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::from_os_rng();
        let mut timeout = timeouts.draw(&mut rng);
        let mut campaigned = Instant::now();
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let (state, voter, voters, leader) = {
                let m = replica.raft.metrics();
                let m = m.borrow();
                let membership = m.membership_config.membership();
                (
                    m.state,
                    membership.voter_ids().any(|v| v == replica.id),
                    membership.voter_ids().count(),
                    m.current_leader == Some(replica.id),
                )
            };
            if state == ServerState::Shutdown {
                break;
            }
            let now = Instant::now();
            if leader && state == ServerState::Leader {
                replica.contact.heard(now);
            }
            let since = replica.contact.last().max(campaigned);
            let local = Local {
                state,
                voter,
                voters,
                quiet: now.saturating_duration_since(since),
                timeout,
            };
            match step(&local) {
                Step::Wait => continue,
                Step::ElectAlone => {}
                Step::PreVote => {
                    let granted = pre_vote(&replica, timeouts.lease()).await;
                    if !granted {
                        tracing::debug!("pre-vote not granted by a majority; not campaigning");
                    }
                    campaigned = Instant::now();
                    timeout = timeouts.draw(&mut rng);
                    if !granted {
                        continue;
                    }
                }
            }
            tracing::info!(
                quiet_ms = local.quiet.as_millis() as u64,
                "no leader heard from; campaigning"
            );
            campaigned = Instant::now();
            timeout = timeouts.draw(&mut rng);
            if let Err(e) = replica.raft.trigger().elect().await {
                tracing::warn!(error = %e, "election trigger");
            }
        }
    })
}

/// Asks every other voter; true when a majority (this replica included) grants.
async fn pre_vote(replica: &Arc<Replica>, wait: Duration) -> bool {
    let (voters, request) = {
        let m = replica.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: Vec<(NodeId, String)> = membership
            .voter_ids()
            .filter(|id| *id != replica.id)
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
            .collect();
        let request = PreVoteRequest {
            candidate: replica.id,
            last_log: replica.raft.data_metrics().borrow().last_log,
        };
        (voters, request)
    };
    // A majority of all voters, this replica included.
    let all = voters.len() + 1;
    let needed = all / 2 + 1;
    let Ok(payload) = postcard::to_stdvec(&request) else {
        return false;
    };
    let mut asks = tokio::task::JoinSet::new();
    for (id, addr) in voters {
        let (replica, payload) = (replica.clone(), payload.clone());
        asks.spawn(async move {
            let answer = ask(&replica, &addr, payload, wait).await;
            if let Err(reason) = &answer {
                tracing::debug!(voter = id, %reason, "pre-vote refused");
            }
            answer.is_ok()
        });
    }
    let mut granted = 1;
    while let Some(answer) = asks.join_next().await {
        granted += usize::from(answer.unwrap_or(false));
        if granted >= needed {
            return true;
        }
    }
    false
}

/// One voter's pre-vote; `Err` says why it was not granted.
async fn ask(
    replica: &Replica,
    addr: &str,
    payload: Vec<u8>,
    wait: Duration,
) -> Result<(), String> {
    let mut client = replica.peers.raft_client(addr).map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(wait, client.pre_vote(replica.peers.message(payload)))
        .await
        .map_err(|_| format!("no answer within {} ms", wait.as_millis()))?;
    let reply = match reply {
        Ok(reply) => reply.into_inner(),
        // A replica of an older build has no pre-vote: its real vote decides.
        Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(()),
        Err(status) => return Err(status.message().to_string()),
    };
    let answer: PreVoteResponse =
        postcard::from_bytes(&reply.payload).map_err(|e| e.to_string())?;
    if answer.granted {
        Ok(())
    } else {
        Err(answer.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index))
    }

    fn voter(since_ms: u64, last_log: Option<LogId<NodeId>>) -> VoterView {
        VoterView {
            leading: false,
            since_contact: Duration::from_millis(since_ms),
            lease: Duration::from_millis(150),
            last_log,
        }
    }

    fn request(last_log: Option<LogId<NodeId>>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 2,
            last_log,
        }
    }

    #[test]
    fn a_voter_that_hears_a_leader_refuses() {
        let answer = answer_pre_vote(&request(log(3, 10)), &voter(40, log(3, 10)));
        assert!(!answer.granted);
        assert!(
            answer.reason.contains("heard from a leader 40 ms ago"),
            "{answer:?}"
        );
        let leading = VoterView {
            leading: true,
            ..voter(1_000, log(3, 10))
        };
        assert!(!answer_pre_vote(&request(log(3, 10)), &leading).granted);
    }

    #[test]
    fn a_candidate_behind_the_voter_is_refused() {
        assert!(!answer_pre_vote(&request(log(3, 9)), &voter(200, log(3, 10))).granted);
        assert!(!answer_pre_vote(&request(log(2, 50)), &voter(200, log(3, 10))).granted);
        assert!(!answer_pre_vote(&request(None), &voter(200, log(1, 1))).granted);
    }

    #[test]
    fn an_up_to_date_candidate_after_the_lease_is_granted() {
        assert!(answer_pre_vote(&request(log(3, 10)), &voter(150, log(3, 10))).granted);
        assert!(answer_pre_vote(&request(log(4, 2)), &voter(400, log(3, 10))).granted);
        assert!(answer_pre_vote(&request(None), &voter(400, None)).granted);
    }

    fn local(state: ServerState, voters: usize, quiet_ms: u64) -> Local {
        Local {
            state,
            voter: true,
            voters,
            quiet: Duration::from_millis(quiet_ms),
            timeout: Duration::from_millis(200),
        }
    }

    #[test]
    fn followers_pre_vote_only_after_their_timeout() {
        assert_eq!(step(&local(ServerState::Follower, 3, 199)), Step::Wait);
        assert_eq!(step(&local(ServerState::Follower, 3, 200)), Step::PreVote);
        assert_eq!(step(&local(ServerState::Leader, 3, 5_000)), Step::Wait);
        assert_eq!(step(&local(ServerState::Candidate, 3, 100)), Step::Wait);
        assert_eq!(step(&local(ServerState::Candidate, 3, 200)), Step::PreVote);
        let learner = Local {
            voter: false,
            ..local(ServerState::Learner, 3, 5_000)
        };
        assert_eq!(step(&learner), Step::Wait);
    }

    #[test]
    fn a_sole_voter_elects_itself_at_once() {
        assert_eq!(step(&local(ServerState::Follower, 1, 0)), Step::ElectAlone);
        assert_eq!(step(&local(ServerState::Leader, 1, 0)), Step::Wait);
    }

    #[test]
    fn timeouts_are_drawn_within_the_configured_range() {
        let t = ElectionTimeouts {
            min: Duration::from_millis(150),
            max: Duration::from_millis(300),
        };
        let mut rng = rand::rng();
        let drawn: Vec<u128> = (0..2_000).map(|_| t.draw(&mut rng).as_millis()).collect();
        assert!(drawn.iter().all(|ms| (150..300).contains(ms)));
        assert!(drawn.iter().any(|ms| *ms < 175) && drawn.iter().any(|ms| *ms >= 275));
        assert_eq!(t.lease(), Duration::from_millis(150));
    }
}
