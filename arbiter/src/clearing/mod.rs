//! The clearing engine: turns one round's bids into allocations and VCG payments.
//!
//! Pure computation, no I/O and no async, so the round loop, the command line and the tests all
//! drive exactly the same code. Layers, bottom up:
//!
//! - [`problem`]: the generic shape (XOR groups of items over capacitated rows);
//! - `compiled`, [`bounds`], [`solver`]: pre-processing, Lagrangian bounds, and the anytime
//!   branch-and-bound that solves it exactly;
//! - [`vcg`]: Clarke-pivot payments on top of the solver;
//! - [`auction`], [`round`]: hosts, guarantees, balances and quotas, translated onto the generic
//!   shape and cleared in parallel — the entry point for the arbiter's round loop is
//!   [`clear_round`];
//! - [`cats`], [`json`]: the two instance formats the `solve` command reads;
//! - [`synthetic`]: seeded plausible host rounds for benchmarks.
pub mod auction;
pub mod bounds;
pub mod cats;
mod compiled;
pub mod json;
pub mod problem;
pub mod round;
pub mod solver;
pub mod synthetic;
pub mod vcg;

pub use auction::{AuctionError, Bundle, CappedBundle, HostAuction, Quota, WorkloadBid};
pub use cats::{CatsBid, CatsError, CatsInstance};
pub use json::parse_host_instance;
pub use problem::{Infeasibility, Item, Problem, ProblemError};
pub use round::{clear_host, clear_round, ClearingOptions, HostOutcome, WorkloadOutcome};
pub use solver::{solve, Solution, SolveOptions};
pub use synthetic::SyntheticHost;
pub use vcg::{clear, Clearing};
