//! VCG payments with the Clarke pivot: each winner pays the welfare its presence costs the others.
//!
//! `p_w = W*(without w) − (W* − v_w)`: the best welfare of everyone else had `w` not bid, minus
//! what everyone else gets in the chosen allocation. Removing `w` removes its whole XOR group; in
//! a host's problem that leaves `w` at its guarantee, which is exactly "not bidding". With exact
//! optima `0 ≤ p_w ≤ v_w` holds by construction (the chosen allocation without `w` is feasible
//! for the problem without `w`; `W*` is at least the optimum without `w`); payments are clamped to
//! that range anyway so a time-limited (inexact) solve can never charge a winner more than it bid
//! or pay it. Losers pay nothing: removing a group that won nothing leaves `W*` optimal.
//!
//! Only winners need a re-solve, each on the already pre-processed problem, warm-started from
//! the chosen allocation minus the winner (a feasible allocation of the problem without it, so the
//! re-solve starts with a good incumbent) and, on few-row problems, from the main solve's optimal
//! root LP basis (still dual feasible once the winner's group is removed, so the re-solve's root
//! LP takes a few dual simplex pivots instead of a solve from scratch). The re-solves run in
//! parallel.

use super::compiled::Compiled;
use super::problem::Problem;
use super::round::map_in_parallel;
use super::solver::{solve_compiled, Solution, SolveOptions};


/// An allocation with its payments.
#[derive(Debug, Clone, PartialEq)]
pub struct Clearing {
    pub solution: Solution,
    /// Payment of each group (0 for groups that won nothing).
    pub payments: Vec<f64>,
    /// Every solve behind the payments finished; otherwise payments are best-effort estimates
    /// (still within `0..=value`).
    pub payments_exact: bool,
}

pub fn clear(problem: &Problem, options: &SolveOptions, with_payments: bool) -> Clearing {
    clear_within(problem, options, 0.0, with_payments)
}

/// Solves `problem` and, if `with_payments`, computes each winning group's VCG payment. The time
/// limit in `options` applies to each solve separately, and so does `relative_gap` (see
/// [`super::solve_within`]): with a gap, `payments_exact` says whether every solve finished
/// within it, and each payment may be off by up to the gap of the two welfares it subtracts.
pub fn clear_within(problem: &Problem, options: &SolveOptions, relative_gap: f64, with_payments: bool) -> Clearing {
    let compiled = Compiled::new(problem);
    let (solution, root_basis) = solve_compiled(&compiled, options, relative_gap, None, &[], None);
    let mut payments = vec![0.0; problem.group_count()];
    let mut payments_exact = solution.finished;
    if with_payments {
        // The re-solves are independent: in parallel (a host cleared alone gets every core; in a
        // round of many hosts rayon shares the cores among hosts and re-solves alike).
        let resolved: Vec<(usize, f64, bool)> = map_in_parallel(&solution.chosen, |&item| {
            let winner = problem.item(item);
            let others: Vec<usize> = solution.chosen.iter().copied().filter(|&i| i != item).collect();
            let (without, _) =
                solve_compiled(&compiled, options, relative_gap, Some(winner.group), &others, root_basis.as_ref());
            let others_now = solution.value - winner.value;
            (winner.group, (without.value - others_now).clamp(0.0, winner.value), without.finished)
        });
        for (group, payment, finished) in resolved {
            payments[group] = payment;
            payments_exact &= finished;
        }
    }
    Clearing { solution, payments, payments_exact }
}
