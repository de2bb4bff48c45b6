//! Reads a workload's application-level SLO metric from its Prometheus endpoint.
//!
//! An SLO such as "p99 latency under 2 ms" is only visible to the application, so the agent
//! scrapes the gauge the application exports. The scrape is a plain HTTP/1.1 GET (endpoints are
//! local to the host; no TLS), bounded in time and size, and the text exposition format is parsed
//! by a pure function so it can be tested on literal pages.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most bytes read from one scrape.
const MAX_PAGE_BYTES: usize = 4 << 20;

/// Why a scrape gave no value.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("unsupported url {0:?}: only http://host:port/path is supported")]
    Url(String),
    #[error("cannot scrape {url}: {reason}")]
    Io { url: String, reason: String },
    #[error("{url} answered HTTP status {status}")]
    Status { url: String, status: String },
    #[error("metric {metric} not found at {url}")]
    Missing { url: String, metric: String },
}

/// Fetches `url` and returns the value of `metric` (a bare name, or a name with its labels
/// exactly as exported, e.g. `latency_ms{quantile="0.99"}`).
pub async fn scrape(url: &str, metric: &str, timeout: Duration) -> Result<f64, ScrapeError> {
    let page = tokio::time::timeout(timeout, fetch(url))
        .await
        .map_err(|_| ScrapeError::Io { url: url.into(), reason: format!("timed out after {timeout:?}") })??;
    find_metric(&page, metric).ok_or_else(|| ScrapeError::Missing { url: url.into(), metric: metric.into() })
}

async fn fetch(url: &str) -> Result<String, ScrapeError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| ScrapeError::Url(url.into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    if authority.is_empty() {
        return Err(ScrapeError::Url(url.into()));
    }
    let io = |e: std::io::Error| ScrapeError::Io { url: url.into(), reason: e.to_string() };
    let address = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
    let mut stream = tokio::net::TcpStream::connect(&address).await.map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut body = Vec::new();
    stream.take(MAX_PAGE_BYTES as u64).read_to_end(&mut body).await.map_err(io)?;
    let text = String::from_utf8_lossy(&body);
    let (head, page) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").split_whitespace().nth(1).unwrap_or("").to_owned();
    if status != "200" {
        return Err(ScrapeError::Status { url: url.into(), status });
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(page));
    }
    Ok(page.to_owned())
}

/// Joins the chunks of a chunked HTTP body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

/// Finds a sample in a Prometheus text exposition page.
pub fn find_metric(page: &str, metric: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let line = line.trim();
        let rest = line.strip_prefix(metric)?;
        // `metric` must end at the name (or the label set), not be a prefix of a longer name.
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
        value.is_finite().then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP latency_ms request latency\n# TYPE latency_ms gauge\n\
        latency_ms{quantile=\"0.5\"} 0.8\nlatency_ms{quantile=\"0.99\"} 2.75\n\
        latency_ms_count 1200\nrequests_total 5e3 1790000000000\nbroken NaN\n";

    #[test]
    fn finds_exact_samples_only() {
        assert_eq!(find_metric(PAGE, "latency_ms{quantile=\"0.99\"}"), Some(2.75));
        assert_eq!(find_metric(PAGE, "latency_ms_count"), Some(1200.0));
        assert_eq!(find_metric(PAGE, "requests_total"), Some(5000.0));
        assert_eq!(find_metric(PAGE, "latency"), None, "a prefix of a name is not the name");
        assert_eq!(find_metric(PAGE, "broken"), None, "NaN is no value");
        assert_eq!(find_metric(PAGE, "absent"), None);
    }

    #[test]
    fn dechunks_bodies() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }

    #[tokio::test]
    async fn scrapes_a_real_http_endpoint() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let body = "p99_ms 3.5\n";
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            socket.write_all(reply.as_bytes()).await.unwrap();
        });
        let url = format!("http://127.0.0.1:{port}/metrics");
        assert_eq!(scrape(&url, "p99_ms", Duration::from_secs(2)).await.unwrap(), 3.5);
        assert!(matches!(scrape("https://x/metrics", "m", Duration::from_secs(1)).await, Err(ScrapeError::Url(_))));
    }
}
