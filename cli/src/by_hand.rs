//! `entente register` and `entente bid`: doing by hand what an agent does, to try the system
//! (or reproduce a problem) without running one.
//!
//! `register host` and `register workload` send the same requests as the agent and print the
//! arbiter's answer. `bid` waits for the next round announcement (or takes `--round`), submits
//! one bid, then listens on the host's rejection subject until the round's deadline: it prints
//! the rejection if one comes, and otherwise says the bid stood. What it won then shows up in
//! `entente watch`.

use crate::amounts::parse_vector;
use crate::connect;
use entente_protocol::cli::NatsArgs;
use entente_protocol::clock::unix_ms_now;
use entente_protocol::{
    Bid, Bundle, ForecastSource, HostId, HostRegistration, Offer, RegistrationReply, Rejection, Resource, ResourceVector,
    RoundAnnouncement, RoundId, Slo, TenantId, WorkloadClass, WorkloadId, WorkloadSpec,
};
use std::time::Duration;

/// `entente register`.
#[derive(clap::Subcommand, Debug)]
pub enum RegisterCommand {
    /// Register a host and its capacity.
    Host(HostArgs),
    /// Register a workload (its host must be registered).
    Workload(WorkloadArgs),
}

/// `entente register host`.
#[derive(clap::Args, Debug)]
pub struct HostArgs {
    #[arg(long)]
    pub host: HostId,
    /// What the host offers, e.g. cpu=4000,memory=8Gi (cpu in millicores).
    #[arg(long, value_parser = parse_vector)]
    pub capacity: ResourceVector,
    /// The resources the host's backend enforces.
    #[arg(long, value_delimiter = ',', value_parser = parse_resource, default_values = ["cpu", "memory"])]
    pub enforces: Vec<Resource>,
    /// The enforcement backend's name, as the agent would report it.
    #[arg(long, default_value = "manual")]
    pub backend: String,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// `entente register workload`.
#[derive(clap::Args, Debug)]
pub struct WorkloadArgs {
    #[arg(long)]
    pub host: HostId,
    #[arg(long)]
    pub workload: WorkloadId,
    #[arg(long, default_value = "default")]
    pub tenant: TenantId,
    #[arg(long, value_enum)]
    pub class: ClassArg,
    /// 1 (lowest) to 100.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub priority: u8,
    /// Always honoured, e.g. cpu=500,memory=256Mi.
    #[arg(long, value_parser = parse_vector, default_value = "")]
    pub guaranteed: ResourceVector,
    /// Never exceeded, e.g. cpu=2000,memory=1Gi.
    #[arg(long, value_parser = parse_vector)]
    pub limit: ResourceVector,
    /// Credit budget (refilled each round in proportion to priority).
    #[arg(long, default_value_t = 1000.0)]
    pub budget: f64,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// A workload's class, as typed.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ClassArg {
    LatencyCritical,
    BestEffort,
    Batch,
}

impl From<ClassArg> for WorkloadClass {
    fn from(class: ClassArg) -> WorkloadClass {
        match class {
            ClassArg::LatencyCritical => WorkloadClass::LatencyCritical,
            ClassArg::BestEffort => WorkloadClass::BestEffort,
            ClassArg::Batch => WorkloadClass::Batch,
        }
    }
}

/// `entente bid`.
#[derive(clap::Args, Debug)]
pub struct BidArgs {
    #[arg(long)]
    pub host: HostId,
    #[arg(long)]
    pub workload: WorkloadId,
    /// One alternative: ID:RESOURCES:VALUE, e.g. more:cpu=1500,memory=512Mi:20 (repeat for an
    /// XOR of bundles; the arbiter grants at most one).
    #[arg(long = "bundle", required = true, value_parser = parse_bundle)]
    pub bundles: Vec<Bundle>,
    /// Bid in this round instead of waiting for the next announcement.
    #[arg(long)]
    pub round: Option<RoundId>,
    /// How many rounds the bid stands unless replaced.
    #[arg(long, default_value_t = 1)]
    pub standing_rounds: u32,
    /// How long to wait for a round announcement, in seconds.
    #[arg(long, default_value_t = 10)]
    pub wait_s: u64,
    #[command(flatten)]
    pub nats: NatsArgs,
}

fn parse_resource(name: &str) -> Result<Resource, String> {
    Resource::from_name(name).ok_or_else(|| format!("{name:?} is not a resource"))
}

/// Parses `ID:RESOURCES:VALUE` into a bundle that requests those resources.
pub fn parse_bundle(text: &str) -> Result<Bundle, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [id, resources, value] = parts[..] else {
        return Err(format!("{text:?} is not ID:RESOURCES:VALUE (e.g. more:cpu=1500,memory=512Mi:20)"));
    };
    let value: f64 = value.parse().map_err(|_| format!("bundle {id:?}: value {value:?} is not a number"))?;
    Ok(Bundle { id: id.to_owned(), alloc: parse_vector(resources)?, value, offer: Offer::Request })
}

/// Sends a registration and prints the answer.
pub async fn register(command: RegisterCommand) -> Result<(), String> {
    let (what, reply) = match command {
        RegisterCommand::Host(args) => {
            let bus = connect(&args.nats, "register").await?;
            let registration = HostRegistration {
                host: args.host.clone(),
                capacity: args.capacity,
                enforces: args.enforces,
                backend: args.backend,
                agent_version: format!("entente-cli {}", env!("CARGO_PKG_VERSION")),
            };
            (format!("host {}", args.host), bus.register_host(&registration).await)
        }
        RegisterCommand::Workload(args) => {
            let bus = connect(&args.nats, "register").await?;
            let spec = WorkloadSpec {
                host: args.host.clone(),
                workload: args.workload.clone(),
                tenant: args.tenant,
                class: args.class.into(),
                priority: args.priority,
                slo: Slo::None,
                estimated_execution_s: None,
                guaranteed: args.guaranteed,
                limit: args.limit,
                budget: args.budget,
            };
            (format!("workload {}/{}", args.host, args.workload), bus.register_workload(&spec).await)
        }
    };
    match reply.map_err(|e| format!("no arbiter leader answered: {e}"))? {
        RegistrationReply::Accepted => {
            println!("{what} registered");
            Ok(())
        }
        RegistrationReply::Refused { reason } => Err(format!("{what} refused: {reason}")),
    }
}

/// Submits one bid and reports whether the arbiter rejected it.
pub async fn bid(args: BidArgs) -> Result<(), String> {
    let bus = connect(&args.nats, "bid").await?;
    let subjects = bus.subjects().clone();
    let mut rejections = bus.subscribe::<Rejection>(subjects.rejections(&args.host)).await.map_err(|e| e.to_string())?;
    // Without an announcement the deadline is unknown: listen for a few seconds.
    let (round, listen_for) = match args.round {
        Some(round) => (round, Duration::from_secs(3)),
        None => {
            let announcement = next_round(&bus, Duration::from_secs(args.wait_s)).await?;
            let left = announcement.deadline_unix_ms.saturating_sub(unix_ms_now());
            (announcement.round, Duration::from_millis(left + 200))
        }
    };
    let bid = Bid {
        bid_id: uuid::Uuid::new_v4(),
        round,
        host: args.host.clone(),
        workload: args.workload.clone(),
        bundles: args.bundles,
        standing_rounds: args.standing_rounds,
        forecast: ForecastSource::Fallback,
    };
    bus.submit_bid(&bid).await.map_err(|e| e.to_string())?;
    bus.flush().await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + listen_for;
    loop {
        let received = tokio::select! {
            r = rejections.next() => r,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let Some(received) = received else { break };
        if let Ok(rejection) = received.message {
            if rejection.bid_id == Some(bid.bid_id) {
                return Err(format!(
                    "bid {} for round {round} rejected ({}): {}",
                    bid.bid_id,
                    rejection.reason.as_str(),
                    rejection.detail
                ));
            }
        }
    }
    println!("bid {} for {}/{} in round {round} stands (no rejection)", bid.bid_id, args.host, args.workload);
    Ok(())
}

async fn next_round(bus: &entente_protocol::bus::Bus, wait: Duration) -> Result<RoundAnnouncement, String> {
    let mut rounds = bus.subscribe::<RoundAnnouncement>(bus.subjects().round()).await.map_err(|e| e.to_string())?;
    let received = tokio::time::timeout(wait, rounds.next())
        .await
        .map_err(|_| format!("no round was announced within {wait:?}: is an arbiter leading?"))?
        .ok_or("the round subscription ended")?;
    received.message.map_err(|e| format!("undecodable round announcement: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_parse_or_say_why_not() {
        let b = parse_bundle("more:cpu=1500,memory=512Mi:20").unwrap();
        assert_eq!((b.id.as_str(), b.alloc.cpu, b.alloc.memory, b.value), ("more", 1500, 512 << 20, 20.0));
        assert!(parse_bundle("more:cpu=1500").unwrap_err().contains("ID:RESOURCES:VALUE"));
        assert!(parse_bundle("more:cpu=1500:lots").unwrap_err().contains("not a number"));
        assert!(parse_bundle("more:gpu=1:2").unwrap_err().contains("not a resource"));
    }
}
