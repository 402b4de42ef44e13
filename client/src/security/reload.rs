//! A value built from files and built again when they change, so that
//! certificates rotate without a restart. Files are looked at no more than
//! once a second; a rebuild that fails keeps the value in use and says why.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often the files' modification times are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

type Stamp = Vec<Option<(SystemTime, u64)>>;
type Build<T> = Box<dyn Fn() -> Result<T, String> + Send + Sync>;

pub struct Reloading<T> {
    paths: Vec<PathBuf>,
    build: Build<T>,
    current: Mutex<Current<T>>,
}

struct Current<T> {
    value: Arc<T>,
    stamp: Stamp,
    checked: Instant,
}

fn stamp(paths: &[PathBuf]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

impl<T> Reloading<T> {
    /// Builds the first value now: a failure here is a configuration error.
    pub fn new(
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let stamp = stamp(&paths);
        let value = Arc::new(build()?);
        Ok(Self {
            paths,
            build: Box::new(build),
            current: Mutex::new(Current {
                value,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The value for the files as they are now (or as they were at the last
    /// good build).
    pub fn get(&self) -> Arc<T> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.checked.elapsed() >= CHECK_EVERY {
            current.checked = Instant::now();
            let now = stamp(&self.paths);
            if now != current.stamp {
                current.stamp = now;
                match (self.build)() {
                    Ok(value) => {
                        current.value = Arc::new(value);
                        tracing::info!(files = ?self.paths, "TLS files changed: reloaded");
                    }
                    Err(e) => tracing::warn!(
                        files = ?self.paths,
                        "TLS files changed but cannot be loaded; keeping the previous ones: {e}"
                    ),
                }
            }
        }
        current.value.clone()
    }
}
