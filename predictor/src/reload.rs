//! Noticing a new model in the model directory, so it can be loaded without a restart.
//!
//! The watcher compares the size and modification time of the model's two files at every check.
//! A change is reported only once the files have stayed the same for one whole check period: a
//! copy in progress (or a graph copied before its sidecar) is not picked up half-way. Each state
//! of the files is reported once, so a broken model is not reloaded (and complained about) every
//! period, and fixing it is noticed as the next change.

use crate::model::model_files;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What the files looked like: size and modification time of each, `None` when absent.
type Stamp = [Option<(u64, SystemTime)>; 2];

/// Watches the model directory.
#[derive(Debug)]
pub struct ModelWatcher {
    files: [PathBuf; 2],
    /// The state last handed out (or found at start-up).
    reported: Stamp,
    /// The state seen at the previous check.
    previous: Stamp,
}

fn stamp(files: &[PathBuf; 2]) -> Stamp {
    files.clone().map(|path| std::fs::metadata(&path).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH))))
}

impl ModelWatcher {
    /// Starts watching `dir`; the files as they are now count as already loaded (or tried).
    pub fn new(dir: &Path) -> ModelWatcher {
        let (onnx, sidecar) = model_files(dir);
        let files = [onnx, sidecar];
        let now = stamp(&files);
        ModelWatcher { files, reported: now, previous: now }
    }

    /// True when the files changed since the last report and have been stable since the
    /// previous check: time to try loading them.
    pub fn changed(&mut self) -> bool {
        let now = stamp(&self.files);
        let settled = now == self.previous;
        self.previous = now;
        if settled && now != self.reported {
            self.reported = now;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MODEL_FILE, SIDECAR_FILE};

    #[test]
    fn reports_a_change_once_it_has_settled_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = ModelWatcher::new(dir.path());
        assert!(!watcher.changed(), "nothing there, nothing new");
        std::fs::write(dir.path().join(MODEL_FILE), b"half").unwrap();
        assert!(!watcher.changed(), "just written: wait one check");
        std::fs::write(dir.path().join(SIDECAR_FILE), b"{}").unwrap();
        assert!(!watcher.changed(), "still changing");
        assert!(watcher.changed(), "settled");
        assert!(!watcher.changed(), "reported once");
        std::fs::write(dir.path().join(MODEL_FILE), b"a longer model").unwrap();
        assert!(!watcher.changed());
        assert!(watcher.changed());
        std::fs::remove_file(dir.path().join(MODEL_FILE)).unwrap();
        assert!(!watcher.changed());
        assert!(watcher.changed(), "a removal is a change too (loading then fails and the old model stays)");
    }
}
