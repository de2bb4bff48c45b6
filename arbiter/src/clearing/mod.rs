//! The clearing engine: turns one round's bids into allocations and VCG payments.
//!
//! Pure computation, no I/O and no async, so the round loop, the command line and the tests all
//! drive exactly the same code. Layers, bottom up:
//!
//! - [`problem`]: the generic shape (XOR groups of items over capacitated rows);
//! - `compiled`, [`bounds`], [`solver`]: pre-processing, Lagrangian bounds, and the anytime
//!   branch-and-bound that solves it exactly, best first on the LP that `node_lp` re-solves per
//!   node after `cliques` has tightened it at the root; for
//!   problems with few rows (a host's round) the solver hands over to `knapsack`, a
//!   branch-and-bound on the exact LP relaxation of `lp`;
//! - [`vcg`]: Clarke-pivot payments on top of the solver;
//! - [`auction`], [`round`]: hosts, guarantees, balances and quotas, translated onto the generic
//!   shape and cleared in parallel — the entry point for the arbiter's round loop is
//!   [`clear_round`];
//! - [`cats`], [`json`]: the two instance formats the `solve` command reads;
//! - [`synthetic`]: seeded plausible host rounds for benchmarks.
pub mod auction;
pub mod bounds;
pub mod cats;
mod cliques;
mod compiled;
pub mod json;
mod knapsack;
mod lp;
mod node_lp;
pub mod problem;
pub mod round;
pub mod solver;
pub mod synthetic;
pub mod vcg;

pub use auction::{AuctionError, Bundle, CappedBundle, HostAuction, Quota, WorkloadBid};
pub use cats::{CatsBid, CatsError, CatsInstance};
pub use json::parse_host_instance;
pub use problem::{Infeasibility, Item, Problem, ProblemError};
pub use round::{
    clear_host, clear_host_within, clear_round, clear_round_within, ClearingOptions, HostOutcome, WorkloadOutcome,
};
pub use solver::{solve, solve_within, Solution, SolveOptions};
pub use synthetic::SyntheticHost;
pub use vcg::{clear, clear_within, Clearing};
