//! Failures: attempt timeouts, a node crash (its requests vanish; the
//! leader notices through the liveness TTL), a straggler (a node slowed by a
//! factor for a while) and a leader failover (soft state lost, commands and
//! placement held for the pause).

use autoglm_server::scheduler::command::Command;
use autoglm_server::scheduler::model::TaskId;

use super::events::Ev;
use super::Sim;

impl Sim {
    pub(super) fn timeout(&mut self, task: TaskId, attempt: u32) {
        let t = &self.state.tasks[&task];
        if t.attempt == attempt && t.state.is_placed() {
            self.propose(Command::AttemptTimedOut { task, attempt }, None);
        }
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
        self.push(self.paused_until, Ev::FailoverEnd);
    }

    pub(super) fn failover_end(&mut self) {
        // A new leader declares nothing down before a full TTL of its own.
        for s in &mut self.last_seen {
            *s = (*s).max(self.now);
        }
        self.ensure_tick();
    }
}
