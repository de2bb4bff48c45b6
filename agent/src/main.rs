//! `entente-agent`: the per-host agent.
//!
//! `entente-agent run` negotiates for every configured workload until SIGINT or SIGTERM;
//! `entente-agent probe` prints what this host lets the agent measure and enforce, which is the
//! first thing to check on a new machine.

use clap::{Parser, Subcommand};
use entente_agent::config::FileSettings;
use entente_agent::enforce::BackendKind;
use entente_agent::runtime::{self, AgentSettings};
use entente_protocol::cli::{init_logging, shutdown_signal, LogArgs, NatsArgs};
use entente_protocol::metrics::MetricsArgs;
use entente_protocol::HostId;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "entente-agent", version, about = "The entente per-host agent")]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
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
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
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
    init_logging(cli.log.log_format, "info");
    let result = match cli.command {
        Command::Probe => {
            println!("{}", runtime::probe_report());
            Ok(())
        }
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("entente-agent: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    let metrics = args.metrics.clone();
    let settings = settings(args)?;
    // The endpoint gets a thread of its own (started outside the runtime), so a scrape never
    // competes with the agent's two workers.
    metrics.serve().map_err(|e| e.to_string())?;
    entente_agent::metrics::describe();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async { runtime::run(settings, shutdown_signal()).await }).map_err(|e| e.to_string())
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
    let mut bus = args.nats.bus_config(file.nats_url.clone(), file.prefix.clone(), format!("entente-agent@{host}"));
    // Agents often start before NATS (containers starting together): keep trying.
    bus.retry_initial_connect = true;
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
