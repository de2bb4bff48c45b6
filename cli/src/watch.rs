//! `entente watch`: the decisions stream, as it is written or replayed.
//!
//! Decisions are the system's one durable output (a JetStream stream, one message per round and
//! host), so watching them is how an operator sees what the arbiter does. By default the command
//! follows new decisions; `--all`, `--from-round R` or `--since TIME` replay first. Each
//! decision is printed as a block (a line for the round and host, a row per allocation) or, with
//! `--json`, as one JSON object per line, written out as soon as it arrives so that a pipe
//! (`| jq`) sees each decision at once.
//!
//! Choosing where to start, and how a decision is printed, are pure functions tested here; the
//! loop around them only reads the stream and writes stdout.

use crate::connect;
use entente_protocol::bus::{ReplayFrom, StoredDecision};
use entente_protocol::cli::NatsArgs;
use entente_protocol::{Decision, HostId, RoundId};
use std::fmt::Write as _;
use std::io::Write as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `entente watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Replay from this round on (the stream's oldest decisions first), then follow.
    #[arg(long, value_name = "ROUND", group = "start", value_parser = clap::value_parser!(RoundId).range(1..))]
    pub from_round: Option<RoundId>,
    /// Replay decisions published since TIME, then follow: RFC 3339
    /// (2026-01-31T12:00:00Z) or an age (90s, 15m, 2h, 1d).
    #[arg(long, value_name = "TIME", group = "start")]
    pub since: Option<String>,
    /// Replay everything the stream holds, then follow.
    #[arg(long, group = "start")]
    pub all: bool,
    /// Only this host's decisions.
    #[arg(long)]
    pub host: Option<HostId>,
    /// Print one JSON object per decision and line.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many decisions.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Where the feed starts, from the flags, `now` being the present.
pub fn replay_from(args: &WatchArgs, now: OffsetDateTime) -> Result<ReplayFrom, String> {
    Ok(match (&args.from_round, &args.since, args.all) {
        (Some(round), _, _) => ReplayFrom::Round(*round),
        (_, Some(since), _) => ReplayFrom::Time(parse_since(since, now)?),
        (_, _, true) => ReplayFrom::All,
        _ => ReplayFrom::New,
    })
}

/// Parses `--since`: an RFC 3339 instant, or an age (`90s`, `15m`, `2h`, `1d`) before `now`.
pub fn parse_since(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let units = [("s", 1u64), ("m", 60), ("h", 3600), ("d", 86_400)];
    let age = units.iter().find_map(|(unit, seconds)| {
        let digits = text.strip_suffix(unit)?;
        digits.parse::<u64>().ok()?.checked_mul(*seconds)
    });
    let age = age.ok_or_else(|| {
        format!("--since {text:?} is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor an age (90s, 15m, 2h, 1d)")
    })?;
    i64::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(time::Duration::seconds(age)))
        .ok_or_else(|| format!("--since {text:?} reaches before any representable time"))
}

/// One decision as a JSON object: the decision's own fields (as on the wire, see
/// docs/PROTOCOL.md) plus its stream `sequence` and the RFC 3339 time it was `published`.
pub fn decision_json(sequence: u64, published: OffsetDateTime, decision: &Decision) -> Result<String, String> {
    let mut value = serde_json::to_value(decision).map_err(|e| format!("cannot write decision as JSON: {e}"))?;
    if let Some(object) = value.as_object_mut() {
        object.insert("sequence".into(), sequence.into());
        object.insert("published".into(), rfc3339(published).into());
    }
    Ok(value.to_string())
}

/// One decision as a readable block: a line for the decision, a row per allocation.
pub fn decision_block(published: OffsetDateTime, decision: &Decision) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "round {}  host {}  term {}  welfare {:.2}{}  {} allocations  {}",
        decision.round,
        decision.host,
        decision.term,
        decision.welfare,
        if decision.optimal { "  optimal" } else { "  (not proven optimal)" },
        decision.allocations.len(),
        rfc3339(published)
    );
    if !decision.unenforced.is_empty() {
        let names: Vec<_> = decision.unenforced.iter().map(|r| r.name()).collect();
        let _ = writeln!(out, "  not enforced on this host: {}", names.join(", "));
    }
    for a in &decision.allocations {
        let _ = writeln!(
            out,
            "  {:<20} cpu {:>7}m  mem {:>7} MiB  disk {:>9} B/s  net {:>9} B/s  bundle {:<12} value {:>8.2}  paid {:>8.2}",
            a.workload.as_str(),
            a.alloc.cpu,
            a.alloc.memory >> 20,
            a.alloc.disk_bw,
            a.alloc.net_bw,
            a.bundle.as_deref().unwrap_or("-"),
            a.value,
            a.payment
        );
    }
    out
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// Follows the stream and prints each decision until interrupted or `--limit` is reached.
pub async fn run(args: WatchArgs) -> Result<(), String> {
    let from = replay_from(&args, OffsetDateTime::now_utc())?;
    let bus = connect(&args.nats, "watch").await?;
    let mut feed = bus
        .decisions(from, args.host.as_ref())
        .await
        .map_err(|e| format!("{e} (has an arbiter with prefix {:?} ever led?)", bus.subjects().prefix()))?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    while args.limit.is_none_or(|limit| printed < limit) {
        let next = tokio::select! {
            next = feed.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let StoredDecision { sequence, published, decision } = match next {
            Some(Ok(stored)) => stored,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the decisions feed ended".into()),
        };
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                eprintln!("entente: decision #{sequence} skipped: {e}");
                continue;
            }
        };
        let text = if args.json {
            decision_json(sequence, published, &decision)? + "\n"
        } else {
            decision_block(published, &decision)
        };
        let mut out = stdout.lock();
        // A closed pipe (`entente watch | head`) ends the watch quietly.
        if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        printed += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use entente_protocol::{Allocation, Resource, ResourceVector};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        watch: WatchArgs,
    }

    fn parse(args: &[&str]) -> Result<WatchArgs, String> {
        Cli::try_parse_from(std::iter::once("watch").chain(args.iter().copied()))
            .map(|c| c.watch)
            .map_err(|e| e.to_string())
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-03-01T12:00:00Z", &Rfc3339).unwrap()
    }

    #[test]
    fn the_start_follows_the_flags() {
        let from = |args: &[&str]| replay_from(&parse(args).unwrap(), now());
        assert_eq!(from(&[]).unwrap(), ReplayFrom::New);
        assert_eq!(from(&["--all"]).unwrap(), ReplayFrom::All);
        assert_eq!(from(&["--from-round", "42"]).unwrap(), ReplayFrom::Round(42));
        assert_eq!(
            from(&["--since", "2026-03-01T11:00:00Z"]).unwrap(),
            ReplayFrom::Time(OffsetDateTime::parse("2026-03-01T11:00:00Z", &Rfc3339).unwrap())
        );
        assert_eq!(from(&["--since", "15m"]).unwrap(), ReplayFrom::Time(now() - time::Duration::minutes(15)));
        assert_eq!(from(&["--since", "1d"]).unwrap(), ReplayFrom::Time(now() - time::Duration::days(1)));
    }

    #[test]
    fn bad_starts_are_refused() {
        assert!(parse(&["--all", "--from-round", "3"]).unwrap_err().contains("cannot be used with"));
        assert!(parse(&["--from-round", "0"]).is_err());
        assert!(parse(&["--from-round", "x"]).is_err());
        let err = replay_from(&parse(&["--since", "yesterday"]).unwrap(), now()).unwrap_err();
        assert!(err.contains("neither an RFC 3339 time"), "{err}");
        assert!(replay_from(&parse(&["--since=-5m"]).unwrap(), now()).is_err());
    }

    fn decision() -> Decision {
        Decision {
            round: 7,
            host: HostId::new("host-a").unwrap(),
            term: 2,
            index: 40,
            decided_at_unix_ms: 1_000,
            lease_expires_unix_ms: 4_000,
            allocations: vec![Allocation {
                workload: "web".parse().unwrap(),
                alloc: ResourceVector::new(1500, 512 << 20, 0, 0),
                bundle: Some("up".into()),
                offer: None,
                value: 10.0,
                payment: 3.5,
            }],
            welfare: 10.0,
            optimal: true,
            unenforced: vec![Resource::NetBw],
        }
    }

    #[test]
    fn json_lines_carry_the_decision_and_where_it_is_in_the_stream() {
        let line = decision_json(12, now(), &decision()).unwrap();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["sequence"], 12);
        assert_eq!(v["published"], "2026-03-01T12:00:00Z");
        assert_eq!(v["round"], 7);
        assert_eq!(v["host"], "host-a");
        assert_eq!(v["allocations"][0]["workload"], "web");
        assert_eq!(v["allocations"][0]["alloc"]["cpu"], 1500);
        assert_eq!(v["allocations"][0]["payment"], 3.5);
        assert_eq!(v["unenforced"][0], "net_bw");
    }

    #[test]
    fn the_block_names_round_host_and_each_allocation() {
        let block = decision_block(now(), &decision());
        let lines: Vec<_> = block.lines().collect();
        assert!(lines[0].starts_with("round 7  host host-a  term 2  welfare 10.00  optimal  1 allocations"), "{block}");
        assert!(lines[1].contains("not enforced on this host: net_bw"), "{block}");
        assert!(lines[2].contains("web") && lines[2].contains("1500m") && lines[2].contains("512 MiB"), "{block}");
        assert!(lines[2].contains("bundle up") && lines[2].contains("paid     3.50"), "{block}");
    }
}
