//! `entente status` and `entente members`: what the arbiter cluster holds, and who belongs to it.
//!
//! Any replica answers a status request with its own view; membership changes are answered by
//! the leader only (the others are not subscribed, so the request times out until one leads).

use crate::connect;
use entente_protocol::cli::NatsArgs;
use entente_protocol::{ClusterStatus, MembershipChange, MembershipReply, NodeId, StatusRequest};
use std::fmt::Write;
use std::time::Duration;

/// `entente status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Hosts only: leave out each host's workloads, allocations and balances.
    #[arg(long)]
    pub summary: bool,
    /// Ask this replica rather than any one.
    #[arg(long)]
    pub node: Option<NodeId>,
    /// Print the status as one JSON object (the wire's field names, see docs/PROTOCOL.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// `entente members`.
#[derive(clap::Args, Debug)]
pub struct MembersArgs {
    /// Node ids to add (they join as learners, catch up, then vote).
    #[arg(long, value_delimiter = ',')]
    pub add: Vec<NodeId>,
    /// Node ids to remove.
    #[arg(long, value_delimiter = ',')]
    pub remove: Vec<NodeId>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Asks a replica for the cluster's status and prints it.
pub async fn status(args: StatusArgs) -> Result<(), String> {
    let bus = connect(&args.nats, "status").await?;
    let subject = match args.node {
        Some(node) => bus.subjects().node_status(node),
        None => bus.subjects().status(),
    };
    let status: ClusterStatus = bus
        .request(subject, &StatusRequest { workloads: !args.summary }, None)
        .await
        .map_err(|e| format!("no arbiter answered: {e}"))?;
    if args.json {
        let json = serde_json::to_string(&status).map_err(|e| format!("cannot write the status as JSON: {e}"))?;
        println!("{json}");
    } else {
        print!("{}", status_table(&status));
    }
    Ok(())
}

/// Asks the leader to change the membership.
pub async fn members(args: MembersArgs) -> Result<(), String> {
    if args.add.is_empty() && args.remove.is_empty() {
        return Err("nothing to change: give --add and/or --remove".into());
    }
    let bus = connect(&args.nats, "members").await?;
    let change = MembershipChange { add: args.add, remove: args.remove };
    // Adding a replica waits for it to catch up with the log, which can take a while.
    let reply: MembershipReply = bus
        .request(bus.subjects().members(), &change, Some(Duration::from_secs(60)))
        .await
        .map_err(|e| format!("no leader answered: {e}"))?;
    match reply {
        MembershipReply::Changed { members } => {
            println!("members: {members:?}");
            Ok(())
        }
        MembershipReply::Refused { reason } => Err(format!("refused: {reason}")),
    }
}

/// The status as a human-readable table.
pub fn status_table(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let leader = status.leader.map_or("none".to_string(), |l| l.to_string());
    let _ = writeln!(
        out,
        "leader {leader}  term {}  members {:?}  last round {}  (answered by node {})",
        status.term, status.members, status.last_round, status.node
    );
    let _ = writeln!(out, "{} hosts, {} workloads", status.hosts_total, status.workloads_total);
    if (status.hosts.len() as u32) < status.hosts_total {
        let _ = writeln!(out, "(listing the first {} hosts)", status.hosts.len());
    }
    for h in &status.hosts {
        let _ = writeln!(
            out,
            "\n{}  [{}]  capacity {}  {} workloads  last decided round {}",
            h.host,
            h.backend,
            h.capacity,
            h.workload_count,
            h.last_decided_round.map_or("-".into(), |r| r.to_string())
        );
        if !h.workloads.is_empty() {
            let _ = writeln!(
                out,
                "  {:<20} {:<16} {:>4} {:>9} {:>10} {:<12} {:>10} {:>8}",
                "WORKLOAD", "CLASS", "PRIO", "CPU", "MEMORY", "BUNDLE", "BALANCE", "BUDGET"
            );
        }
        for w in &h.workloads {
            let _ = writeln!(
                out,
                "  {:<20} {:<16} {:>4} {:>8}m {:>7} MiB {:<12} {:>10.1} {:>8.0}",
                w.workload.as_str(),
                format!("{:?}", w.class),
                w.priority,
                w.allocation.cpu,
                w.allocation.memory >> 20,
                w.bundle.as_deref().unwrap_or("-"),
                w.balance,
                w.budget
            );
        }
    }
    out
}
