//! The event queue and the clock: one heap ordered by (time, sequence), so
//! events at the same microsecond run in the order they were scheduled and a
//! run never depends on anything but its inputs.

use std::cmp::Ordering;

use autoglm_server::scheduler::command::Command;
use autoglm_server::scheduler::model::TaskId;

use super::Sim;

pub(super) enum Ev {
    Arrive(usize),
    Apply {
        command: Command,
        /// For a success report: (node, attempt run time) for the latency EWMA.
        ran: Option<(usize, u64)>,
    },
    Tick,
    Wake {
        node: usize,
        epoch: u64,
    },
    Start {
        node: usize,
        task: TaskId,
        attempt: u32,
    },
    Heartbeat(usize),
    HeartbeatArrives {
        node: usize,
        util: f64,
    },
    Liveness,
    Timers,
    Crash(usize),
    /// The node starts or stops failing every attempt.
    Broken {
        node: usize,
        broken: bool,
    },
    /// A broken node's attempt fails.
    FailAttempt {
        node: usize,
        task: TaskId,
        attempt: u32,
    },
    Slow {
        node: usize,
        factor: f64,
    },
    FailoverStart,
    FailoverEnd,
    EndOfArrivals,
    Sweep,
}

pub(super) struct Scheduled {
    pub(super) at: u64,
    pub(super) seq: u64,
    pub(super) ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    /// Reversed: BinaryHeap is a max-heap, the earliest event must come first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

impl Sim {
    pub(super) fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }
}
