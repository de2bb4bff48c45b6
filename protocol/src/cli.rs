//! Command-line pieces every entente binary shares: the flags that say how to reach NATS, the
//! logging set-up, and the shutdown signal.
//!
//! Each binary flattens [`NatsArgs`] and [`LogArgs`] into its own arguments, so `--nats`,
//! `--prefix`, credentials, TLS and `--log-format` (and their `ENTENTE_*` environment variables)
//! mean the same everywhere. The metrics endpoint's flag lives with it, in [`crate::metrics`].

use crate::bus::{BusConfig, TlsConfig};
use std::path::PathBuf;

/// How to reach NATS.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "ENTENTE_NATS")]
    pub nats: Option<String>,
    /// Subject prefix of this deployment.
    #[arg(long, env = "ENTENTE_PREFIX")]
    pub prefix: Option<String>,
    /// NATS credentials file.
    #[arg(long, env = "ENTENTE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "ENTENTE_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "ENTENTE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Require TLS to NATS.
    #[arg(long, env = "ENTENTE_NATS_TLS")]
    pub nats_tls: bool,
    /// PEM root certificates for NATS TLS.
    #[arg(long, env = "ENTENTE_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
}

impl NatsArgs {
    /// The bus configuration: these flags (or environment) over the values from a settings file
    /// (`file_url`, `file_prefix`) over the defaults.
    pub fn bus_config(&self, file_url: Option<String>, file_prefix: Option<String>, name: String) -> BusConfig {
        let defaults = BusConfig::default();
        BusConfig {
            url: self.nats.clone().or(file_url).unwrap_or(defaults.url),
            prefix: self.prefix.clone().or(file_prefix).unwrap_or(defaults.prefix),
            name,
            credentials_file: self.nats_creds.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            tls: TlsConfig { require: self.nats_tls, ca_file: self.nats_ca.clone(), ..Default::default() },
            ..defaults
        }
    }
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, spans), for log
    /// collectors.
    Json,
}

/// How to log.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Log format on stderr. Which events are logged is set by ENTENTE_LOG (e.g. debug,
    /// info,entente_arbiter=debug).
    #[arg(long, env = "ENTENTE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Logs to stderr in `format`, filtered by `ENTENTE_LOG` (default `default_filter`).
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENTENTE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGINT or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    // The handlers are installed now, not when the future is first polled: a SIGTERM that
    // arrives while the binary is still starting up must ask for a clean shutdown, not kill it.
    // Must be called inside a Tokio runtime.
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                only.recv().await;
            }
            (Err(e), Err(_)) => {
                tracing::warn!(error = %e, "cannot install signal handlers; running until killed");
                std::future::pending::<()>().await;
            }
        }
        tracing::info!("shutdown requested");
    }
}
