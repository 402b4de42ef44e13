//! Failures: attempt timeouts (the leader's timer, `leader::decide`), a node crash (its requests vanish; the
//! leader notices through the liveness TTL), a straggler (a node slowed by a
//! factor for a while) and a leader failover (soft state lost, commands and
//! placement held for the pause).

use autoglm_server::leader::decide::{self, TIMER_INTERVAL_MS};

use autoglm_server::scheduler::command::{AttemptUpdate, Command};
use autoglm_server::scheduler::model::TaskId;

use super::events::Ev;
use super::Sim;

impl Sim {
    /// The leader's attempt timers (none while there is no leader).
    pub(super) fn timers(&mut self) {
        if self.now >= self.paused_until {
            for command in decide::timed_out_attempts(&self.state, self.now / 1000) {
                self.propose(command, None);
            }
        }
        self.push(self.now + TIMER_INTERVAL_MS * 1000, Ev::Timers);
    }

    pub(super) fn crash(&mut self, i: usize) {
        let model = self.cfg.model.clone();
        let n = &mut self.nodes[i];
        n.advance(self.now, &model);
        n.up = false;
        n.epoch += 1;
        for r in n.reqs.drain(..) {
            self.running_on.remove(&r.task);
        }
    }

    /// A broken node's attempt fails, if it is still the task's current one there.
    pub(super) fn fail_attempt(&mut self, node: usize, task: TaskId, attempt: u32) {
        if self.running_on.get(&task) != Some(&(attempt, node)) {
            return;
        }
        self.running_on.remove(&task);
        let name = self.nodes[node].name.clone();
        self.propose(
            Command::ReportAttempt {
                task,
                attempt,
                node: name,
                update: AttemptUpdate::Failed {
                    exit_code: Some(1),
                    message: "simulated broken node".into(),
                    output_tail: String::new(),
                },
            },
            None,
        );
    }

    pub(super) fn slow(&mut self, node: usize, factor: f64) {
        let model = self.cfg.model.clone();
        self.nodes[node].advance(self.now, &model);
        self.nodes[node].slow = factor;
        self.reschedule(node);
    }

    pub(super) fn failover_start(&mut self) {
        let pause = self.cfg.failover.map_or(0, |f| f.1) * 1000;
        self.paused_until = self.now + pause;
        // The new leader starts with no soft state.
        self.live.clear();
        self.ewma.clear();
        self.migrated.clear();
        self.push(self.paused_until, Ev::FailoverEnd);
    }

    pub(super) fn failover_end(&mut self) {
        // A new leader declares nothing down before a full TTL of its own.
        self.leader_since = self.now;
        self.ensure_tick();
    }
}
