//! entente-arbiter as a library. Read it in the order of a round:
//!
//! - [`replica`] runs one replica: Raft over NATS ([`raft`]) with the [`ledger`] as its
//!   replicated state, and the status endpoint;
//! - [`leader`] is what the leader does: announce rounds, take bids, admit hosts and workloads;
//! - [`rounds`] is a round's pure logic, from bids to decisions;
//! - [`clearing`] is the auction engine that [`rounds`] and the `solve` command share;
//! - [`commands`] is the `run` subcommand's settings;
//! - [`metrics`] names what the arbiter counts for its Prometheus endpoint.

pub mod clearing;
pub mod commands;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod raft;
pub mod replica;
pub mod rounds;
