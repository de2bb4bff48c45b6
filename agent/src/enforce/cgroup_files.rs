//! Reading and writing cgroup interface files, shared by the v1 and v2 backends.
//!
//! Errors name the file and keep the OS error, because "Invalid argument" alone says nothing
//! about which of a dozen files the kernel refused. Writes are counted so tests can prove that
//! re-applying an unchanged allocation touches no file.

use super::EnforceError;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads and writes the files of cgroups, counting the writes.
#[derive(Debug, Default)]
pub(crate) struct CgroupFiles {
    writes: AtomicU64,
}

impl CgroupFiles {
    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub(crate) fn read(&self, path: &Path) -> Result<String, EnforceError> {
        fs::read_to_string(path).map_err(|source| match source.kind() {
            ErrorKind::NotFound if !path.parent().is_some_and(Path::exists) => {
                EnforceError::NoSuchCgroup(path.parent().map(Path::to_path_buf).unwrap_or_default())
            }
            _ => EnforceError::Read {
                path: path.to_path_buf(),
                source,
            },
        })
    }

    /// Reads a file holding one integer (`-1` allowed) or `max`; `None` for `max` or -1.
    pub(crate) fn read_limit(&self, path: &Path) -> Result<Option<u64>, EnforceError> {
        let content = self.read(path)?;
        parse_limit(path, content.trim())
    }

    /// Puts the cgroup in `dir` into the kernel's idle class or takes it out (`cpu.idle`, the
    /// same file in v1 and v2), and says whether it is idle now. A kernel without the file
    /// (before 5.15) has no idle class: nothing is written and the answer is `false`, so the
    /// caller enforces a weight instead. Call it before writing a weight: the kernel refuses a
    /// weight for an idle group, and restores the group's previous weight when it leaves.
    pub(crate) fn set_idle(&self, dir: &Path, idle: bool) -> Result<bool, EnforceError> {
        let file = dir.join("cpu.idle");
        if !file.exists() {
            return Ok(false);
        }
        let now = self.read_limit(&file)? == Some(1);
        if now != idle {
            self.write(&file, if idle { "1" } else { "0" })?;
        }
        Ok(idle)
    }

    pub(crate) fn write(&self, path: &Path, value: &str) -> Result<(), EnforceError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        fs::write(path, value).map_err(|source| {
            if source.raw_os_error() == Some(libc::EBUSY) {
                EnforceError::MemoryBelowUsage {
                    path: path.to_path_buf(),
                    value: value.to_string(),
                }
            } else if source.kind() == ErrorKind::NotFound
                && !path.parent().is_some_and(Path::exists)
            {
                EnforceError::NoSuchCgroup(path.parent().map(Path::to_path_buf).unwrap_or_default())
            } else {
                EnforceError::Write {
                    path: path.to_path_buf(),
                    value: value.to_string(),
                    source,
                }
            }
        })
    }
}

/// Parses one limit value: an integer, `-1` or `max` (the last two: no limit, `None`).
pub(crate) fn parse_limit(path: &Path, text: &str) -> Result<Option<u64>, EnforceError> {
    if text == "max" || text == "-1" {
        return Ok(None);
    }
    text.parse::<u64>()
        .map(Some)
        .map_err(|e| EnforceError::Parse {
            path: path.to_path_buf(),
            content: text.to_string(),
            reason: e.to_string(),
        })
}

/// The directory of a cgroup, checked to exist so that errors say "no such cgroup" rather than
/// "no such file".
pub(crate) fn existing_dir(dir: PathBuf) -> Result<PathBuf, EnforceError> {
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(EnforceError::NoSuchCgroup(dir))
    }
}
