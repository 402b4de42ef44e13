//! A GPU node's service model at run time: the requests in its batch, each
//! prefilling then decoding at a rate that depends on the batch size, and
//! the agent side of an attempt (start, finish, cancel). Busy time and
//! occupancy are counted here for the metrics.

use autoglm_server::scheduler::command::{AttemptUpdate, Command};
use autoglm_server::scheduler::model::{NodeName, TaskId};

use super::events::Ev;
use super::Sim;
use crate::sim::model::ServiceModel;

pub(super) struct Req {
    pub(super) task: TaskId,
    attempt: u32,
    /// Prefill work left, in seconds on a speed-1.0 GPU.
    prefill_left: f64,
    /// Output tokens left after the first.
    decode_left: f64,
    started_us: u64,
    first_token_us: Option<u64>,
}

pub(super) struct SimNode {
    pub(super) name: NodeName,
    pub(super) speed: f64,
    pub(super) cap: u32,
    pub(super) up: bool,
    /// Every attempt fails shortly after it starts (`Fleet::broken`).
    pub(super) broken: bool,
    pub(super) slow: f64,
    pub(super) reqs: Vec<Req>,
    pub(super) last_us: u64,
    pub(super) epoch: u64,
    pub(super) busy_us: u64,
    pub(super) window_busy_us: u64,
    pub(super) occupancy_us: f64,
    pub(super) max_batch: usize,
}

impl SimNode {
    fn speed_now(&self) -> f64 {
        self.speed / self.slow
    }

    /// Moves every request forward to `now`.
    pub(super) fn advance(&mut self, now: u64, model: &ServiceModel) {
        let dt_us = now.saturating_sub(self.last_us);
        self.last_us = now;
        let b = self.reqs.len();
        if b == 0 || dt_us == 0 {
            return;
        }
        self.busy_us += dt_us;
        self.window_busy_us += dt_us;
        self.occupancy_us += dt_us as f64 * b as f64 / self.cap as f64;
        let dt = dt_us as f64 / 1e6;
        let speed = self.speed_now();
        let rate = model.decode_rate(speed, b);
        for r in &mut self.reqs {
            if r.first_token_us.is_none() {
                r.prefill_left -= dt * speed;
            } else {
                r.decode_left -= dt * rate;
            }
        }
    }

    /// When the next request changes phase or finishes, if any.
    fn next_change(&self, now: u64, model: &ServiceModel) -> Option<u64> {
        let speed = self.speed_now();
        let rate = model.decode_rate(speed, self.reqs.len());
        self.reqs
            .iter()
            .map(|r| {
                if r.first_token_us.is_none() {
                    r.prefill_left.max(0.0) / speed
                } else {
                    r.decode_left.max(0.0) / rate
                }
            })
            .min_by(f64::total_cmp)
            .map(|s| now + ((s * 1e6).ceil() as u64).max(1))
    }
}

impl Sim {
    pub(super) fn reschedule(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.epoch += 1;
        let epoch = n.epoch;
        if let Some(at) = n.next_change(self.now, &self.cfg.model) {
            self.push(at, Ev::Wake { node, epoch });
        }
    }

    pub(super) fn start(&mut self, node: usize, task: TaskId, attempt: u32) {
        self.in_transit[node] -= 1;
        let t = &self.state.tasks[&task];
        let current = t.attempt == attempt
            && t.state.is_placed()
            && t.placement
                .as_ref()
                .is_some_and(|p| p.node == self.nodes[node].name);
        if !self.nodes[node].up || !current {
            return;
        }
        if self.nodes[node].broken {
            self.running_on.insert(task, (attempt, node));
            let fail_after = self
                .cfg
                .fleet
                .broken
                .as_ref()
                .map_or(0, |b| b.fail_after_ms);
            self.push(
                self.now + fail_after * 1000,
                Ev::FailAttempt {
                    node,
                    task,
                    attempt,
                },
            );
            return;
        }
        let tr = &self.tracks[&task];
        let req = &self.jobs[tr.job].tasks[tr.k];
        let (input, output) = (req.input_tokens as f64, req.output_tokens as f64);
        let model = self.cfg.model.clone();
        let n = &mut self.nodes[node];
        n.advance(self.now, &model);
        n.reqs.push(Req {
            task,
            attempt,
            prefill_left: input * model.prefill_s_per_token,
            decode_left: (output - 1.0).max(0.0),
            started_us: self.now,
            first_token_us: None,
        });
        n.max_batch = n.max_batch.max(n.reqs.len());
        self.running_on.insert(task, (attempt, node));
        self.reschedule(node);
        let name = self.nodes[node].name.clone();
        self.propose(
            Command::ReportAttempt {
                task,
                attempt,
                node: name,
                update: AttemptUpdate::Running,
            },
            None,
        );
    }

    pub(super) fn wake(&mut self, node: usize) {
        let model = self.cfg.model.clone();
        let now = self.now;
        let n = &mut self.nodes[node];
        n.advance(now, &model);
        let mut finished = Vec::new();
        for r in &mut n.reqs {
            if r.first_token_us.is_none() && r.prefill_left <= 1e-9 {
                r.first_token_us = Some(now);
            }
        }
        n.reqs.retain(|r| {
            let done = r.first_token_us.is_some() && r.decode_left <= 1e-6;
            if done {
                finished.push((
                    r.task,
                    r.attempt,
                    r.started_us,
                    r.first_token_us.unwrap_or(now),
                ));
            }
            !done
        });
        let name = n.name.clone();
        self.reschedule(node);
        for (task, attempt, started, first) in finished {
            self.running_on.remove(&task);
            if let Some(tr) = self.tracks.get_mut(&task) {
                tr.done.push((attempt, started, first, now));
            }
            self.propose(
                Command::ReportAttempt {
                    task,
                    attempt,
                    node: name.clone(),
                    update: AttemptUpdate::Succeeded {
                        exit_code: Some(0),
                        output_tail: String::new(),
                    },
                },
                Some((node, (now - started) / 1000)),
            );
        }
    }

    /// The agent stops an attempt the state no longer places on its node.
    pub(super) fn cancel_if_moved(&mut self, task: TaskId) {
        let Some(&(attempt, node)) = self.running_on.get(&task) else {
            return;
        };
        let t = &self.state.tasks[&task];
        let still = t.attempt == attempt
            && t.state.is_placed()
            && t.placement
                .as_ref()
                .is_some_and(|p| p.node == self.nodes[node].name);
        if still {
            return;
        }
        self.running_on.remove(&task);
        let model = self.cfg.model.clone();
        let n = &mut self.nodes[node];
        n.advance(self.now, &model);
        n.reqs.retain(|r| !(r.task == task && r.attempt == attempt));
        self.reschedule(node);
    }
}
