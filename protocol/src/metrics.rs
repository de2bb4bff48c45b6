//! The Prometheus endpoint every entente binary serves.
//!
//! Components record through the `metrics` facade (`metrics::counter!` and friends) at the
//! places where things happen; this module installs the one recorder that keeps those values
//! and serves them over HTTP in the Prometheus text format. Each binary flattens
//! [`MetricsArgs`] into its `run` arguments, so `--metrics-addr` (or `ENTENTE_METRICS_ADDR`)
//! means the same everywhere.
//!
//! The endpoint is off unless an address is given: several entente processes often share one
//! machine (three arbiter replicas, an agent, the predictor), and a fixed default port would
//! make all but the first fail to start. Without a recorder every `metrics::` call is a no-op.

use metrics_exporter_prometheus::PrometheusBuilder;
use std::net::{SocketAddr, ToSocketAddrs};

/// Histogram buckets, in seconds, shared by every latency and duration histogram: from half a
/// millisecond (a small auction cleared) to ten seconds (a round badly overrun).
pub const DURATION_BUCKETS_SECONDS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Where to serve metrics.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics over HTTP at this address (e.g. 0.0.0.0:9464), path /metrics.
    /// No endpoint when unset.
    #[arg(long, env = "ENTENTE_METRICS_ADDR", value_name = "HOST:PORT", value_parser = parse_listen_addr)]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts the endpoint when an address was given; see [`serve`].
    pub fn serve(&self) -> Result<(), MetricsError> {
        match self.metrics_addr {
            Some(addr) => serve(addr),
            None => Ok(()),
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}")]
pub struct MetricsError {
    pub addr: SocketAddr,
    pub reason: String,
}

/// Installs the process-wide recorder and serves `GET /metrics` on `addr`.
///
/// Called inside a Tokio runtime, the listener runs on it; called outside one, it gets a
/// single-threaded runtime on a thread of its own. The address is bound before this returns, so
/// a port already in use is an error here, not a silent gap in the metrics. Call it once per
/// process: a second recorder is refused.
pub fn serve(addr: SocketAddr) -> Result<(), MetricsError> {
    let fail = |reason: String| MetricsError { addr, reason };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(DURATION_BUCKETS_SECONDS)
        .map_err(|e| fail(e.to_string()))?
        .install()
        .map_err(|e| fail(e.to_string()))?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    Ok(())
}

/// Parses `HOST:PORT`, resolving a host name (`localhost:9464`) to its first address.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT ({e})"))?;
    addrs.next().ok_or_else(|| format!("{text:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_or_say_why_not() {
        assert_eq!(parse_listen_addr("127.0.0.1:9464").unwrap(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(parse_listen_addr("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert_eq!(parse_listen_addr("localhost:9464").unwrap().port(), 9464);
        assert!(parse_listen_addr("9464").unwrap_err().contains("not HOST:PORT"));
        assert!(parse_listen_addr("127.0.0.1:http").unwrap_err().contains("not HOST:PORT"));
    }
}
