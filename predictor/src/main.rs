//! `entente-predictor`: the forecasting service.
//!
//! `entente-predictor run` serves forecasts until SIGINT or SIGTERM; `entente-predictor check`
//! loads a model directory, runs one inference and prints what the model is, which is how to
//! vet a freshly trained model before copying it where a running service will pick it up.

use clap::{Parser, Subcommand};
use entente_predictor::correlation::CorrelationConfig;
use entente_predictor::model::Model;
use entente_predictor::service::{self, ServiceConfig};
use entente_protocol::cli::{init_logging, shutdown_signal, LogArgs, NatsArgs};
use entente_protocol::metrics::MetricsArgs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "entente-predictor", version, about = "The entente predictor: interference forecasts per host")]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve forecasts until interrupted.
    Run(RunArgs),
    /// Load the model in a directory, run it once and print its version; fails if it is unusable.
    Check {
        /// Directory holding entente-predictor.onnx and entente-predictor.json.
        #[arg(long, env = "ENTENTE_MODEL_DIR")]
        model_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Directory holding entente-predictor.onnx and entente-predictor.json; watched for new models.
    #[arg(long, env = "ENTENTE_MODEL_DIR")]
    model_dir: PathBuf,
    /// How often forecasts are made, in milliseconds.
    #[arg(long, env = "ENTENTE_INTERVAL_MS", default_value_t = 1000)]
    interval_ms: u64,
    /// Forget a workload after this many intervals without telemetry.
    #[arg(long, env = "ENTENTE_STALE_INTERVALS", default_value_t = 3)]
    stale_intervals: u32,
    /// Accept samples stamped at most this far ahead of this host's clock (milliseconds).
    #[arg(long, env = "ENTENTE_MAX_CLOCK_SKEW_MS", default_value_t = 5000)]
    max_clock_skew_ms: u64,
    /// How often to check the model directory for a new model, in milliseconds.
    #[arg(long, env = "ENTENTE_RELOAD_CHECK_MS", default_value_t = 1000)]
    reload_check_ms: u64,
    /// Intervals the rolling correlation analysis looks back over.
    #[arg(long, env = "ENTENTE_CORRELATION_WINDOW", default_value_t = 60)]
    correlation_window: u64,
    /// Joint observations a pair needs before it can be named as interfering often.
    #[arg(long, env = "ENTENTE_CORRELATION_MIN_OBSERVATIONS", default_value_t = 10)]
    correlation_min_observations: usize,
    /// Correlation at or above which a pair is named as interfering often.
    #[arg(long, env = "ENTENTE_CORRELATION_THRESHOLD", default_value_t = 0.6)]
    correlation_threshold: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.log_format, "info");
    let result = match cli.command {
        Command::Check { model_dir } => check(&model_dir),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("entente-predictor: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    let metrics = args.metrics.clone();
    let config = settings(args)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(async {
            // Bound before the service starts: a port in use is an error now, not a gap later.
            metrics.serve().map_err(|e| e.to_string())?;
            entente_predictor::metrics::describe();
            service::run(config, shutdown_signal()).await.map(|_| ()).map_err(|e| e.to_string())
        })
}

fn settings(args: RunArgs) -> Result<ServiceConfig, String> {
    if args.interval_ms < 100 {
        return Err(format!("interval {} ms is below the 100 ms minimum", args.interval_ms));
    }
    if args.reload_check_ms < 10 {
        return Err(format!("reload check every {} ms is below the 10 ms minimum", args.reload_check_ms));
    }
    if !(args.correlation_threshold.is_finite() && (-1.0..=1.0).contains(&args.correlation_threshold)) {
        return Err(format!("correlation threshold {} is outside -1..=1", args.correlation_threshold));
    }
    if args.correlation_window < 2 || args.correlation_min_observations < 2 {
        return Err("the correlation window and its minimum observations must be at least 2".into());
    }
    let mut bus = args.nats.bus_config(None, None, "entente-predictor".into());
    // The predictor often starts before NATS (containers starting together): keep trying.
    bus.retry_initial_connect = true;
    Ok(ServiceConfig {
        bus,
        model_dir: args.model_dir,
        interval: Duration::from_millis(args.interval_ms),
        stale_intervals: args.stale_intervals.max(1),
        max_clock_skew: Duration::from_millis(args.max_clock_skew_ms),
        reload_check: Duration::from_millis(args.reload_check_ms),
        correlation: CorrelationConfig {
            window: args.correlation_window,
            min_observations: args.correlation_min_observations,
            threshold: args.correlation_threshold,
        },
    })
}

fn check(dir: &std::path::Path) -> Result<(), String> {
    let started = Instant::now();
    let model = Model::load(dir).map_err(|e| e.to_string())?;
    let loaded = started.elapsed();
    let sidecar = model.sidecar();
    let (n, t, f) = (sidecar.slots, sidecar.window, sidecar.features);
    let started = Instant::now();
    let out = model.run(&vec![0.0; n * t * f], &vec![1.0; n]).map_err(|e| e.to_string())?;
    let ran = started.elapsed();
    if out.slowdown.iter().any(|s| !s.is_finite()) {
        return Err(format!("{}: the model predicts non-finite slowdowns for an idle host", dir.display()));
    }
    println!(
        "{}",
        serde_json::json!({
            "version": sidecar.version,
            "interface": sidecar.interface,
            "window": t,
            "slots": n,
            "features": f,
            "interval_ms": sidecar.interval_ms,
            "trained_on": sidecar.trained_on,
            "load_ms": loaded.as_secs_f64() * 1e3,
            "first_inference_ms": ran.as_secs_f64() * 1e3,
        })
    );
    Ok(())
}
