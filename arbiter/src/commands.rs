//! `entente-arbiter run`: the settings of one replica and starting it. (Asking the cluster for
//! its status and changing its members are the `entente` command's `status` and `members`.)
//!
//! Settings come from flags, then `ENTENTE_*` environment variables (both resolved by clap),
//! then an optional TOML file (`--config`), then defaults. Everything is checked before the
//! replica starts, so a bad setting is one clear message and a non-zero exit.

use crate::leader::RoundSettings;
use crate::replica::{self, Bootstrap, ReplicaSettings};
use entente_protocol::cli::{shutdown_signal, NatsArgs};
use entente_protocol::metrics::MetricsArgs;
use entente_protocol::NodeId;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `entente-arbiter run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// TOML file with any of: node_id, peers, data_dir, nats_url, prefix, round_ms.
    #[arg(long, env = "ENTENTE_CONFIG")]
    pub config: Option<PathBuf>,
    /// This replica's Raft node id (a positive integer, unique in the cluster).
    #[arg(long, env = "ENTENTE_NODE_ID")]
    pub node_id: Option<NodeId>,
    /// The node ids of the initial cluster, comma-separated (e.g. 1,2,3).
    #[arg(long, env = "ENTENTE_PEERS", value_delimiter = ',')]
    pub peers: Option<Vec<NodeId>>,
    /// Join an existing cluster instead of founding one: the replica waits, answering Raft, until
    /// `entente members --add <node-id>` makes it a member. For replacing a replica.
    #[arg(long, env = "ENTENTE_JOIN", conflicts_with = "peers")]
    pub join: bool,
    /// Where this replica keeps its Raft log and snapshots.
    #[arg(long, env = "ENTENTE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Round period in milliseconds (100 or more).
    #[arg(long, env = "ENTENTE_ROUND_MS")]
    pub round_ms: Option<u64>,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Settings a TOML file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub node_id: Option<NodeId>,
    pub peers: Option<Vec<NodeId>>,
    pub join: Option<bool>,
    pub data_dir: Option<PathBuf>,
    pub nats_url: Option<String>,
    pub prefix: Option<String>,
    pub round_ms: Option<u64>,
}

fn load(path: Option<&PathBuf>) -> Result<FileSettings, String> {
    let Some(path) = path else { return Ok(FileSettings::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl RunArgs {
    /// Resolves and checks every setting.
    pub fn settings(&self) -> Result<ReplicaSettings, String> {
        let file = load(self.config.as_ref())?;
        let node_id = self.node_id.or(file.node_id).ok_or("--node-id is required")?;
        if node_id == 0 {
            return Err("--node-id must be a positive integer".into());
        }
        let join = self.join || file.join.unwrap_or(false);
        let bootstrap = if join {
            if self.peers.is_some() || file.peers.is_some() {
                return Err("--join and --peers exclude each other: a joining replica is added by the cluster".into());
            }
            Bootstrap::Join
        } else {
            let peers = self.peers.clone().or(file.peers.clone()).unwrap_or_else(|| vec![node_id]);
            if !peers.contains(&node_id) {
                return Err(format!("--peers {peers:?} must include this node ({node_id})"));
            }
            Bootstrap::Found { peers }
        };
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(format!("./arbiter-{node_id}")));
        let round_ms = self.round_ms.or(file.round_ms).unwrap_or(1000);
        if round_ms < 100 {
            return Err(format!("--round-ms {round_ms} is below the 100 ms minimum"));
        }
        let mut bus = self.nats.bus_config(file.nats_url.clone(), file.prefix.clone(), format!("entente-arbiter-{node_id}"));
        bus.retry_initial_connect = true;
        Ok(ReplicaSettings {
            node_id,
            bootstrap,
            data_dir,
            bus,
            rounds: RoundSettings::for_interval(Duration::from_millis(round_ms)),
            raft: Default::default(),
        })
    }
}

/// Runs one replica until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), String> {
    let settings = args.settings()?;
    args.metrics.serve().map_err(|e| e.to_string())?;
    crate::metrics::describe();
    tracing::info!(node = settings.node_id, bootstrap = ?settings.bootstrap, data_dir = %settings.data_dir.display(), "entente-arbiter starting");
    replica::run(settings, shutdown_signal()).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn run_settings_are_checked() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap().run.settings();
        let ok = parse(&["--node-id", "2", "--peers", "1,2,3", "--data-dir", "/tmp/a2", "--round-ms", "500"]).unwrap();
        assert_eq!((ok.node_id, ok.bootstrap.clone()), (2, Bootstrap::Found { peers: vec![1, 2, 3] }));
        assert_eq!(parse(&["--node-id", "4", "--join"]).unwrap().bootstrap, Bootstrap::Join);
        assert!(Cli::try_parse_from(["x", "--node-id", "4", "--join", "--peers", "1,4"]).is_err());
        assert_eq!(ok.rounds.interval, Duration::from_millis(500));
        assert!(parse(&[]).unwrap_err().contains("--node-id is required"));
        assert!(parse(&["--node-id", "4", "--peers", "1,2,3"]).unwrap_err().contains("must include this node"));
        assert!(parse(&["--node-id", "1", "--round-ms", "10"]).unwrap_err().contains("100 ms"));
    }
}
