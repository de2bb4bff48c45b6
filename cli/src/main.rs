//! `entente`: the operator's command for a running entente deployment.
//!
//! The components themselves (`entente-arbiter`, `entente-agent`, `entente-predictor`) only run;
//! everything a person does to a running system goes through this one command: follow the
//! decisions as they are made or replay them (`watch`), ask the arbiter cluster what it holds
//! (`status`), change its replicas (`members`), and try the system by hand without an agent
//! (`register`, `bid`). Every subcommand speaks to NATS through the protocol crate's `Bus`, with
//! the same `--nats`/`--prefix` flags and `ENTENTE_*` variables as the components.
//!
//! Every failure is one readable message on stderr and a non-zero exit.

mod amounts;
mod by_hand;
mod status;
mod watch;

use clap::{Parser, Subcommand};
use entente_protocol::bus::Bus;
use entente_protocol::cli::{init_logging, LogArgs, NatsArgs};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "entente", version, about = "Watch and operate a running entente deployment")]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the decisions stream (from now, or replayed from a round or a time).
    Watch(watch::WatchArgs),
    /// Show the arbiter leader, term, members, hosts, workloads, allocations and budgets.
    Status(status::StatusArgs),
    /// Add or remove arbiter replicas (replace one: --add NEW --remove OLD).
    Members(status::MembersArgs),
    /// Register a host or a workload with the arbiter cluster, as an agent would.
    #[command(subcommand)]
    Register(by_hand::RegisterCommand),
    /// Bid for a workload in the next (or a given) round, as its agent would.
    Bid(by_hand::BidArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Quiet by default: this command's output is its answer, not a log.
    init_logging(cli.log.log_format, "warn");
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("entente: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Watch(args) => watch::run(args).await,
            Command::Status(args) => status::status(args).await,
            Command::Members(args) => status::members(args).await,
            Command::Register(command) => by_hand::register(command).await,
            Command::Bid(args) => by_hand::bid(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("entente: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to NATS as the flags say, naming the connection after the subcommand.
async fn connect(nats: &NatsArgs, subcommand: &str) -> Result<Bus, String> {
    let config = nats.bus_config(None, None, format!("entente-{subcommand}"));
    Bus::connect(&config).await.map_err(|e| e.to_string())
}
