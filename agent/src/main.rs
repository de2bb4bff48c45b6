//! `entente-agent`: the per-host agent.
//!
//! `entente-agent run` negotiates for every configured workload until SIGINT or SIGTERM;
//! `entente-agent probe` prints what this host lets the agent measure and enforce, which is the
//! first thing to check on a new machine.

use clap::{Parser, Subcommand};
use entente_agent::config::FileSettings;
use entente_agent::enforce::BackendKind;
use entente_agent::runtime::{self, AgentSettings};
use entente_protocol::bus::BusConfig;
use entente_protocol::HostId;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "entente-agent", version, about = "The entente per-host agent")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, env = "ENTENTE_LOG_JSON", global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Negotiate for this host's workloads until interrupted.
    Run(RunArgs),
    /// Print the host's monitoring and enforcement capabilities and exit.
    Probe,
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML file with settings and the workload list.
    #[arg(long, env = "ENTENTE_CONFIG")]
    config: Option<PathBuf>,
    /// This host's id (default: the file's `host`, else the hostname).
    #[arg(long, env = "ENTENTE_HOST")]
    host: Option<String>,
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "ENTENTE_NATS")]
    nats: Option<String>,
    /// Subject prefix of this deployment.
    #[arg(long, env = "ENTENTE_PREFIX")]
    prefix: Option<String>,
    /// NATS credentials file.
    #[arg(long, env = "ENTENTE_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "ENTENTE_NATS_USER")]
    nats_user: Option<String>,
    #[arg(long, env = "ENTENTE_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// Require TLS to NATS.
    #[arg(long, env = "ENTENTE_NATS_TLS")]
    nats_tls: bool,
    /// PEM root certificates for NATS TLS.
    #[arg(long, env = "ENTENTE_NATS_CA")]
    nats_ca: Option<PathBuf>,
    /// Monitoring interval in milliseconds.
    #[arg(long, env = "ENTENTE_INTERVAL_MS")]
    interval_ms: Option<u64>,
    /// Enforcement backend: cgroup (detect v1/v2), cgroup-v1, cgroup-v2, docker, dry-run.
    #[arg(long, env = "ENTENTE_BACKEND")]
    backend: Option<String>,
    /// Parent cgroup for commands the agent starts.
    #[arg(long, env = "ENTENTE_CGROUP_PARENT")]
    cgroup_parent: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let result = match cli.command {
        Command::Probe => {
            println!("{}", runtime::probe_report());
            Ok(())
        }
        Command::Run(args) => settings(args).and_then(|settings| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            rt.block_on(runtime::run(settings, shutdown_signal())).map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("entente-agent: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves flags over environment (both via clap) over the file over defaults.
fn settings(args: RunArgs) -> Result<AgentSettings, String> {
    let file = match &args.config {
        Some(path) => FileSettings::load(path).map_err(|e| e.to_string())?,
        None => FileSettings::default(),
    };
    let host = args.host.or(file.host.clone()).map_or_else(hostname, Ok)?;
    let host = HostId::new(host.clone()).map_err(|e| format!("host id {host:?}: {e}"))?;
    let workloads = file.workloads(&host).map_err(|e| e.to_string())?;
    let backend = match args.backend.or(file.backend.clone()).as_deref() {
        None | Some("cgroup") => None,
        Some(name) => Some(name.parse::<BackendKind>().map_err(|e| e.to_string())?),
    };
    let interval = Duration::from_millis(args.interval_ms.or(file.interval_ms).unwrap_or(1000));
    if interval < Duration::from_millis(100) {
        return Err(format!("interval {interval:?} is below the 100 ms minimum"));
    }
    let defaults = BusConfig::default();
    let bus = BusConfig {
        url: args.nats.or(file.nats_url.clone()).unwrap_or(defaults.url),
        prefix: args.prefix.or(file.prefix.clone()).unwrap_or(defaults.prefix),
        name: format!("entente-agent@{host}"),
        credentials_file: args.nats_creds,
        user: args.nats_user,
        password: args.nats_password,
        tls: entente_protocol::bus::TlsConfig { require: args.nats_tls, ca_file: args.nats_ca, ..Default::default() },
        retry_initial_connect: true,
        ..defaults
    };
    Ok(AgentSettings {
        host,
        bus,
        interval,
        backend,
        capacity: file.capacity,
        cgroup_parent: args.cgroup_parent.or(file.cgroup_parent.clone()).unwrap_or_else(|| "entente".into()),
        discover_containers: file.discover_containers.unwrap_or(false),
        workloads,
    })
}

fn hostname() -> Result<String, String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("cannot read the hostname ({e}); pass --host"))?;
    // Hostnames may hold dots; host ids may not.
    Ok(name.trim().replace('.', "-"))
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENTENTE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
