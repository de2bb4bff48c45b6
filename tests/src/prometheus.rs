//! Checking a running binary's Prometheus endpoint the way Prometheus itself would see it.
//!
//! [`scrape`] fetches `/metrics` over plain HTTP; [`check_exposition`] hands the text to
//! `promtool check metrics`, Prometheus's own parser and linter (Debian package `prometheus`,
//! installed by `scripts/test.sh`; `$ENTENTE_PROMTOOL` names another binary); [`metric_families`]
//! and [`sample_value`] read what the text says; [`documented_metrics`] lists the names
//! `docs/METRICS.md` promises for a component, so a test can hold the endpoint to the document.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `GET /metrics` from `addr`: the body of a `200 OK`, or why there is none.
pub fn scrape(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| format!("read from {addr}: {e}"))?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("{addr} answered {status:?}"));
    }
    if head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked")) {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The `promtool` to run: `$ENTENTE_PROMTOOL`, else the one on `PATH`.
pub fn promtool_binary() -> PathBuf {
    std::env::var_os("ENTENTE_PROMTOOL").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("promtool"))
}

/// Runs `promtool check metrics` on `exposition`: `Ok` only when it parses and has no lint
/// problem (missing help, counters without `_total`, bad units...).
pub fn check_exposition(exposition: &str) -> Result<(), String> {
    let binary = promtool_binary();
    let mut child = Command::new(&binary)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}; ./scripts/test.sh installs it (Debian package prometheus)", binary.display()))?;
    child.stdin.take().expect("piped").write_all(exposition.as_bytes()).map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics ({}): {said}", output.status))
    }
}

/// The metric families the exposition declares (its `# TYPE` lines).
pub fn metric_families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The value of one series, named as it is written (`name` or `name{label="value"}`).
pub fn sample_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// The metric names that `docs/METRICS.md` lists for `component` (those that begin
/// `entente_<component>_`), read from the repository at `repo_root`.
pub fn documented_metrics(repo_root: &Path, component: &str) -> BTreeSet<String> {
    let path = repo_root.join("docs/METRICS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let prefix = format!("entente_{component}_");
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| code.starts_with(&prefix) && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// Checks that the scrape `exposition` of `component` exports exactly the `entente_<component>_`
/// metrics that `docs/METRICS.md` (under `repo_root`) lists, and that the list has at least
/// `at_least` of them: documentation and code cannot drift apart unnoticed.
pub fn assert_documented(exposition: &str, repo_root: &Path, component: &str, at_least: usize) {
    let families = metric_families(exposition);
    let documented = documented_metrics(repo_root, component);
    assert!(documented.len() >= at_least, "docs/METRICS.md lists too few {component} metrics: {documented:?}");
    let missing: Vec<_> = documented.difference(&families).collect();
    assert!(missing.is_empty(), "documented but not exported: {missing:?}\n{exposition}");
    let prefix = format!("entente_{component}_");
    let undocumented: Vec<_> = families.iter().filter(|f| f.starts_with(&prefix) && !documented.contains(*f)).collect();
    assert!(undocumented.is_empty(), "exported but not in docs/METRICS.md: {undocumented:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{reason=\"late\"} 3\na_total{reason=\"x\"} 0\n\
                        # TYPE b_seconds histogram\nb_seconds_bucket{le=\"+Inf\"} 1\nb_seconds_sum 0.5\nb_seconds_count 1\n";

    #[test]
    fn families_and_values_are_read() {
        assert_eq!(metric_families(TEXT), BTreeSet::from(["a_total".to_string(), "b_seconds".to_string()]));
        assert_eq!(sample_value(TEXT, "a_total{reason=\"late\"}"), Some(3.0));
        assert_eq!(sample_value(TEXT, "b_seconds_sum"), Some(0.5));
        assert_eq!(sample_value(TEXT, "a_total"), None);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
