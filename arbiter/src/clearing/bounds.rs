//! Upper bounds for the branch-and-bound: Lagrangian relaxation of the capacity rows.
//!
//! Pricing each row at a multiplier `λ_r ≥ 0` (per unit of the row's capacity) and dropping the
//! rows leaves a problem that splits by group: each group takes its item of highest *reduced
//! value* `v_i − Σ_r λ_r·a_ri / cap_r`, or nothing if none is positive. For **any** `λ ≥ 0`
//!
//! ```text
//! L(λ) = fixed value + Σ_r λ_r·residual_r / cap_r + Σ_groups max(0, max_i reduced value_i)
//! ```
//!
//! is an upper bound on every completion of the node, so a bound is never wrong however crude the
//! multipliers; better multipliers only prune more. Because the group sub-problem has integral
//! vertices, the best `λ` gives exactly the LP relaxation bound. Multipliers are improved by
//! projected subgradient steps (Polyak step towards the incumbent); a child starts from its
//! parent's multipliers, so a few steps per node keep the bound close to the LP bound at a small
//! fraction of an LP solve's cost. Only the items still *live* at a node (group open, not excluded
//! by branching, fitting the residual capacity) take part, which tightens the bound as the search
//! goes deeper: for set packing, every bid touching an already sold good simply disappears.

use super::compiled::{Compiled, NO_ITEM};

/// Evaluates `L(λ)` over the `live` items (sorted by group). `reduced` receives the reduced
/// value of every live item (indexed by item).
pub(crate) fn lagrangian(
    c: &Compiled,
    fixed_value: f64,
    residual: &[u64],
    live: &[u32],
    lambda: &[f64],
    reduced: &mut [f64],
    picks: &mut Vec<u32>,
) -> f64 {
    let mut bound = fixed_value;
    for r in 0..c.rows() {
        bound += lambda[r] * residual[r] as f64 * c.inv_capacity[r];
    }
    picks.clear();
    let mut group = u32::MAX;
    let mut best = 0.0f64;
    let mut best_item = NO_ITEM;
    for &i in live {
        let mut rv = c.value[i as usize];
        for e in c.consumption(i) {
            rv -= lambda[c.cons_row[e] as usize] * c.cons_fraction[e];
        }
        reduced[i as usize] = rv;
        let g = c.item_group[i as usize];
        if g != group {
            if best_item != NO_ITEM {
                bound += best;
                picks.push(best_item);
            }
            group = g;
            best = 0.0;
            best_item = NO_ITEM;
        }
        if rv > best {
            best = rv;
            best_item = i;
        }
    }
    if best_item != NO_ITEM {
        bound += best;
        picks.push(best_item);
    }
    bound
}

#[allow(clippy::too_many_arguments)] // the search's scratch buffers, passed to avoid allocation
/// One projected subgradient step on `lambda`, aiming the bound at `target`. Returns `false`
/// when the subgradient vanishes on every row that could move (the relaxation's picks are
/// feasible and complementary: the bound is exact for this node).
pub(crate) fn subgradient_step(
    c: &Compiled,
    residual: &[u64],
    picks: &[u32],
    lambda: &mut [f64],
    gradient: &mut [f64],
    bound: f64,
    target: f64,
    step_scale: f64,
) -> bool {
    for r in 0..c.rows() {
        gradient[r] = residual[r] as f64 * c.inv_capacity[r];
    }
    for &i in picks {
        for e in c.consumption(i) {
            gradient[c.cons_row[e] as usize] -= c.cons_fraction[e];
        }
    }
    let mut norm2 = 0.0;
    for r in 0..c.rows() {
        // A row priced at zero with slack cannot go lower: it does not steer the step.
        if lambda[r] <= 0.0 && gradient[r] >= 0.0 {
            gradient[r] = 0.0;
        }
        norm2 += gradient[r] * gradient[r];
    }
    if norm2 <= 1e-18 {
        return false;
    }
    let gap = (bound - target).max(1e-9 * bound.abs().max(1.0));
    let step = step_scale * gap / norm2;
    for r in 0..c.rows() {
        lambda[r] = (lambda[r] - step * gradient[r]).max(0.0);
    }
    true
}
