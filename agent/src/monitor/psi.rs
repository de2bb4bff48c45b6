//! Pressure-stall information: how much of the last 10 s tasks spent waiting for cpu, memory or io.
//!
//! PSI is read from the workload's own cgroup2 directory when it has one (the figure is then
//! about the workload alone), from `/proc/pressure` otherwise (the whole host's, and said so),
//! and reported unavailable on kernels without PSI.

use entente_protocol::{Pressure, PsiSource};
use std::path::Path;

/// The `avg10` figures of one pressure file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiAvg10 {
    pub some: Option<f64>,
    /// `None` where the kernel writes no `full` line (cpu before Linux 5.13).
    pub full: Option<f64>,
}

/// Parses `some avg10=.. avg60=.. avg300=.. total=..` and `full ...` lines. Values are clamped
/// to 0..=100 so a malformed figure never yields an invalid telemetry sample.
pub fn parse_pressure(text: &str) -> PsiAvg10 {
    let mut out = PsiAvg10::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let kind = parts.next();
        let avg10 = parts
            .find_map(|f| f.strip_prefix("avg10="))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .map(|v| v.clamp(0.0, 100.0));
        match kind {
            Some("some") => out.some = avg10,
            Some("full") => out.full = avg10,
            _ => {}
        }
    }
    out
}

/// Reads the three pressure files in `dir`; `None` when not even `cpu.pressure` is readable.
fn read_dir(dir: &Path, source: PsiSource) -> Option<Pressure> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok().map(|t| parse_pressure(&t));
    let cpu = read("cpu.pressure")?;
    let memory = read("memory.pressure").unwrap_or_default();
    let io = read("io.pressure").unwrap_or_default();
    Some(Pressure {
        source,
        cpu_some: cpu.some,
        cpu_full: cpu.full,
        memory_some: memory.some,
        memory_full: memory.full,
        io_some: io.some,
        io_full: io.full,
    })
}

/// Where the host keeps its system-wide pressure files.
pub const HOST_PRESSURE_DIR: &str = "/proc/pressure";

/// Pressure with no figures at all.
pub fn unavailable() -> Pressure {
    Pressure {
        source: PsiSource::Unavailable,
        cpu_some: None,
        cpu_full: None,
        memory_some: None,
        memory_full: None,
        io_some: None,
        io_full: None,
    }
}

/// The workload's pressure: its cgroup2 directory's files, else the host's, else unavailable.
pub fn read_pressure(cgroup2_dir: Option<&Path>) -> Pressure {
    cgroup2_dir
        .and_then(|dir| read_dir(dir, PsiSource::Cgroup))
        .or_else(|| read_dir(Path::new(HOST_PRESSURE_DIR), PsiSource::Host))
        .unwrap_or_else(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full_lines_parse() {
        let text = "some avg10=51.67 avg60=50.86 avg300=35.86 total=187273276\n\
                    full avg10=0.50 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_pressure(text), PsiAvg10 { some: Some(51.67), full: Some(0.5) });
    }

    #[test]
    fn old_kernel_cpu_file_has_no_full_line() {
        let text = "some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n";
        assert_eq!(parse_pressure(text), PsiAvg10 { some: Some(1.0), full: None });
    }

    #[test]
    fn garbage_gives_none_and_out_of_range_is_clamped() {
        assert_eq!(parse_pressure("nonsense\nsome avg10=abc\n"), PsiAvg10::default());
        assert_eq!(parse_pressure("some avg10=250.0 total=1\n").some, Some(100.0));
    }

    #[test]
    fn cgroup_dir_is_preferred_over_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.pressure"), "some avg10=7.00 avg60=0 avg300=0 total=1\n").unwrap();
        let p = read_pressure(Some(dir.path()));
        assert_eq!(p.source, PsiSource::Cgroup);
        assert_eq!(p.cpu_some, Some(7.0));
        assert_eq!(p.memory_some, None);
        // A directory without pressure files falls back to the host (or unavailable).
        let empty = tempfile::tempdir().unwrap();
        assert_ne!(read_pressure(Some(empty.path())).source, PsiSource::Cgroup);
    }
}
