//! Agents' heartbeats and the leader's liveness check: NVML-style metrics
//! every heartbeat period, delivered after a delay, and a node declared down
//! once silent for the TTL (never while the leader is paused).

use autoglm_server::leader::decide::{self, AgentContact, LIVENESS_INTERVAL_MS};
use autoglm_server::scheduler::placement::LiveNode;

use super::events::Ev;
use super::Sim;

/// GPU memory used as NVML reports it: inference servers pre-allocate ~90%.
const GPU_MEM_USED: f64 = 0.9;

impl Sim {
    /// GPU util is the share of the last period with a request running.
    pub(super) fn heartbeat(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        let model = self.cfg.model.clone();
        let n = &mut self.nodes[i];
        n.advance(self.now, &model);
        let util = (n.window_busy_us as f64 / (self.cfg.heartbeat_ms * 1000) as f64).min(1.0);
        n.window_busy_us = 0;
        self.push(
            self.now + self.cfg.heartbeat_delay_ms * 1000,
            Ev::HeartbeatArrives { node: i, util },
        );
        self.push(self.now + self.cfg.heartbeat_ms * 1000, Ev::Heartbeat(i));
    }

    pub(super) fn heartbeat_arrives(&mut self, node: usize, util: f64) {
        let l = LiveNode {
            gpu_util: util,
            gpu_mem_used: GPU_MEM_USED,
            cpu_util: 0.1,
            mem_util: 0.3,
            net_latency_ms: 1.0,
            age_ms: 0,
            latency_ewma_ms: None,
        };
        let name = self.nodes[node].name.clone();
        self.live.insert(name, (l, self.now));
        self.last_seen[node] = self.now.max(self.last_seen[node]);
    }

    /// The leader's liveness check (`leader::decide::liveness`), never while
    /// there is no leader.
    pub(super) fn liveness(&mut self) {
        if self.now >= self.paused_until {
            let commands = decide::liveness(
                &self.state,
                |name| {
                    let i = self.node_index[name];
                    AgentContact {
                        last_seen_ms: Some(self.last_seen[i] / 1000),
                        connected: self.nodes[i].up,
                    }
                },
                self.now / 1000,
                self.leader_since / 1000,
                self.cfg.effective_ttl_ms(),
            );
            for command in commands {
                self.propose(command, None);
            }
        }
        self.push(self.now + LIVENESS_INTERVAL_MS * 1000, Ev::Liveness);
    }
}
