//! sled panics on some damaged files (a flipped or missing blob) instead of
//! returning an error. While a store is opened and verified, such a panic
//! becomes [`Damage`]: a clean refusal, not a crash loop under a supervisor.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use crate::{Damage, OpenError};

thread_local! {
    /// Set while this thread reads a store: its panics are reported as damage,
    /// so the default hook's message is not printed.
    static READING_STORE: Cell<bool> = const { Cell::new(false) };
}

fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !READING_STORE.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `read` (opening and verifying the store in `dir`); a panic inside it
/// is returned as damage to that store.
pub(crate) fn as_damage<T>(
    dir: &Path,
    read: impl FnOnce() -> Result<T, OpenError>,
) -> Result<T, OpenError> {
    install_hook();
    READING_STORE.with(|r| r.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(read));
    READING_STORE.with(|r| r.set(false));
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(Damage {
            file: dir.join("db"),
            index: None,
            problem: format!("sled failed reading it ({message})"),
        }
        .into())
    })
}
