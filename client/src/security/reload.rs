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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Builds the file's content, failing on "bad".
    fn reloading(path: &std::path::Path, builds: Arc<AtomicU32>) -> Reloading<String> {
        let p = path.to_path_buf();
        Reloading::new(vec![p.clone()], move || {
            builds.fetch_add(1, Ordering::Relaxed);
            let text = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
            if text == "bad" {
                return Err("bad content".into());
            }
            Ok(text)
        })
        .unwrap()
    }

    #[test]
    fn changed_files_rebuild_and_broken_ones_keep_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "one").unwrap();
        let builds = Arc::new(AtomicU32::new(0));
        let r = reloading(&path, builds.clone());
        assert_eq!(*r.get(), "one");
        // Unchanged files are not rebuilt, however often they are asked for.
        std::thread::sleep(CHECK_EVERY);
        assert_eq!(*r.get(), "one");
        assert_eq!(builds.load(Ordering::Relaxed), 1);

        std::fs::write(&path, "second").unwrap();
        std::thread::sleep(CHECK_EVERY);
        assert_eq!(*r.get(), "second");

        std::fs::write(&path, "bad").unwrap();
        std::thread::sleep(CHECK_EVERY);
        assert_eq!(
            *r.get(),
            "second",
            "a broken file keeps the last good value"
        );

        std::fs::write(&path, "third!").unwrap();
        std::thread::sleep(CHECK_EVERY);
        assert_eq!(*r.get(), "third!");
    }

    #[test]
    fn a_first_build_that_fails_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.pem");
        let p = path.clone();
        let r = Reloading::new(vec![path], move || {
            std::fs::read_to_string(&p).map_err(|e| e.to_string())
        });
        assert!(r.is_err());
    }
}
