//! Attempts this agent already finished, with their final reports. A report
//! lost with a leader makes the next leader assign the same attempt again;
//! answering with the remembered report instead of running it again keeps
//! one agent from running one attempt twice.

use std::collections::{HashMap, VecDeque};

use autoglm_client::proto::{AttemptReport, AttemptStatus};

use crate::executor::AttemptKey;

/// Finished attempts remembered (the oldest are forgotten first).
pub const FINISHED_MAX: usize = 4_096;

#[derive(Debug, Default)]
pub struct Finished {
    order: VecDeque<AttemptKey>,
    reports: HashMap<AttemptKey, AttemptReport>,
}

impl Finished {
    /// Remembers `report` if it is final.
    pub fn record(&mut self, report: &AttemptReport) {
        let status = AttemptStatus::try_from(report.status).unwrap_or(AttemptStatus::Unspecified);
        if !matches!(status, AttemptStatus::Succeeded | AttemptStatus::Failed) {
            return;
        }
        let key = AttemptKey::of_report(report);
        if self.reports.insert(key, report.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > FINISHED_MAX {
            if let Some(old) = self.order.pop_front() {
                self.reports.remove(&old);
            }
        }
    }

    /// The final report of `key`, if this agent already ran it.
    pub fn get(&self, key: &AttemptKey) -> Option<&AttemptReport> {
        self.reports.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(task_id: u64, status: AttemptStatus) -> AttemptReport {
        AttemptReport {
            task_id,
            attempt: 1,
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn remembers_final_reports_only_and_forgets_the_oldest() {
        let mut f = Finished::default();
        f.record(&report(1, AttemptStatus::Running));
        assert!(f.get(&AttemptKey::new(1, 1)).is_none());
        for id in 0..(FINISHED_MAX as u64 + 10) {
            f.record(&report(id, AttemptStatus::Succeeded));
        }
        assert!(f.get(&AttemptKey::new(0, 1)).is_none(), "oldest forgotten");
        assert!(f
            .get(&AttemptKey::new(FINISHED_MAX as u64 + 9, 1))
            .is_some());
        assert_eq!(f.reports.len(), FINISHED_MAX);
    }
}
