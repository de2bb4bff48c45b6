//! The clearing engine: turns one round's bids into allocations and VCG payments.
//!
//! Pure computation, no I/O and no async, so the round loop, the command line and the tests all
//! drive exactly the same code. Layers, bottom up:
//!
//! - [`problem`]: the generic shape (XOR groups of items over capacitated rows);
//! - `compiled`, [`bounds`], [`solver`]: pre-processing, Lagrangian bounds, and the anytime
//!   branch-and-bound that solves it exactly;
//! - [`cats`]: the CATS benchmark format, mapped onto that shape.
pub mod bounds;
pub mod cats;
mod compiled;
pub mod problem;
pub mod solver;

pub use cats::{CatsBid, CatsError, CatsInstance};
pub use problem::{Infeasibility, Item, Problem, ProblemError};
pub use solver::{solve, Solution, SolveOptions};
