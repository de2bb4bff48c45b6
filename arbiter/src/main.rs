//! The `entente-arbiter` command: `run` starts one replica of the arbiter cluster, and `solve`
//! clears one auction instance read from a file (CATS or entente's JSON host format) and prints
//! the result as JSON. Operating a running cluster (`status`, `members`) is the `entente`
//! command's job.
//!
//! Every failure is reported on stderr as one readable message with a non-zero exit, never as a
//! panic: malformed input files are the common case when people try the tool by hand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use entente_arbiter::clearing::{self, CatsInstance, ClearingOptions, SolveOptions};
use entente_arbiter::commands;
use serde_json::json;

#[derive(Parser)]
#[command(name = "entente-arbiter", version, about = "The entente arbiter")]
struct Cli {
    #[command(flatten)]
    log: entente_protocol::cli::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one replica of the arbiter cluster until SIGINT or SIGTERM.
    Run(commands::RunArgs),
    /// Clear one auction instance from a file and print {"welfare", "optimal", "elapsed_ms", "winners"}.
    Solve(SolveArgs),
}

#[derive(clap::Args)]
struct SolveArgs {
    /// The instance's format.
    #[arg(long, value_enum)]
    format: InstanceFormat,
    /// Stop after this many milliseconds and print the best allocation found (optimal: false).
    #[arg(long)]
    time_limit_ms: Option<u64>,
    /// The instance file.
    file: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum InstanceFormat {
    /// Combinatorial Auction Test Suite winner determination.
    Cats,
    /// entente's single-host JSON instance.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    entente_protocol::cli::init_logging(cli.log.log_format, "info,openraft=warn");
    let result = match cli.command {
        Command::Solve(args) => solve(&args),
        Command::Run(args) => block_on(commands::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("entente-arbiter: {message}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(work: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(work)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn solve(args: &SolveArgs) -> Result<(), String> {
    let text = read(&args.file)?;
    let options = SolveOptions { time_limit: args.time_limit_ms.map(Duration::from_millis) };
    let output = match args.format {
        InstanceFormat::Cats => {
            let instance = CatsInstance::parse(&text).map_err(|e| format!("{}: {e}", args.file.display()))?;
            let started = Instant::now();
            let solution = clearing::solve(&instance.to_problem(), &options);
            let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
            json!({
                "welfare": solution.value,
                "optimal": solution.optimal,
                "elapsed_ms": elapsed_ms,
                "bound": solution.bound,
                "nodes": solution.nodes,
                "winners": solution.chosen,
            })
        }
        InstanceFormat::Json => {
            let host = clearing::parse_host_instance(&text, &args.file.display().to_string())
                .map_err(|e| format!("{}: {e}", args.file.display()))?;
            let started = Instant::now();
            let outcome = clearing::clear_host(&host, &ClearingOptions { time_limit: options.time_limit, payments: true })
                .map_err(|e| format!("{}: {e}", args.file.display()))?;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
            let winners: Vec<_> = outcome
                .workloads
                .iter()
                .filter_map(|w| {
                    w.bundle_id.as_ref().map(|b| json!({"bidder": w.workload, "bundle": b, "payment": w.payment}))
                })
                .collect();
            let capped: Vec<_> = outcome
                .capped
                .iter()
                .map(|c| json!({"bidder": c.workload, "bundle": c.bundle, "bid_value": c.bid_value, "capped_value": c.capped_value}))
                .collect();
            json!({
                "welfare": outcome.welfare,
                "optimal": outcome.optimal,
                "elapsed_ms": elapsed_ms,
                "payments_exact": outcome.payments_exact,
                "winners": winners,
                "capped": capped,
            })
        }
    };
    println!("{output}");
    Ok(())
}
