//! The exact solver for problems of many rows (set packing, CATS; a host's round of a few rows
//! goes to [`super::knapsack`]): branch-and-bound over items with Lagrangian bounds.
//!
//! Why this shape: a CATS instance has hundreds of bids and goods, small enough that a tight
//! bound at every node beats general-purpose MIP machinery, and the search keeps an incumbent
//! from its first dive, so the solver is *anytime*: stopped by its time budget it still returns
//! the best allocation found, a valid upper bound, and whether the two meet (proven optimal).
//!
//! The root solves the LP relaxation ([`super::node_lp`]) and tightens it by clique cuts
//! ([`super::cliques`]). With that LP the search is best first (`best_first`): every node
//! re-solves it and its bound is the Lagrangian ([`super::bounds`]) at the LP's duals. Without it
//! (too many rows for its dense inverse, or no optimum before the deadline) the search here is
//! depth first and prices the rows with multipliers improved by subgradient steps, each node
//! starting from its parent's. Either way the live items of a node (open group, not excluded,
//! fitting the residual capacity) are the ones priced; the relaxation's picks (and the LP's
//! point, rounded) are tried as allocations, greedily repaired; reduced-value fixing drops the
//! items that cannot be part of a better allocation; the node is pruned when its bound cannot
//! beat the incumbent; otherwise it branches on an item: take it (its group closes, its
//! consumption leaves the residual, items that no longer fit drop out), or exclude it.
//!
//! A bound within a relative 1e-9 of the incumbent counts as "cannot beat it" (float sums carry
//! rounding); when every value is a whole number the bound must beat the incumbent by almost 1.

use std::time::{Duration, Instant};

use super::bounds::{lagrangian, subgradient_step};
use super::cliques;
use super::compiled::Compiled;
use super::knapsack;
use super::lp::{Basis, MAX_LP_ROWS};
use super::problem::Problem;
use super::node_lp::{ItemBound, LpStatus, NodeLp};

mod best_first;

/// Limits on one solve. The default has no limit at all: the result is always proven optimal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SolveOptions {
    /// Stop searching after this long and return the best allocation found so far.
    pub time_limit: Option<Duration>,
}

/// The outcome of a solve.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// Chosen item numbers (as returned by [`Problem::add_item`]), ascending.
    pub chosen: Vec<usize>,
    /// Sum of the chosen items' values.
    pub value: f64,
    /// No feasible selection is worth more than this (equals `value` when `optimal`).
    pub bound: f64,
    /// The search finished and the bound met the value: `value` is the optimum (to a relative
    /// 1e-9).
    pub optimal: bool,
    /// The search finished: `value` is within the requested relative gap of the optimum (with
    /// no gap asked for, the same as `optimal`). `bound` says how close it is.
    pub finished: bool,
    /// Branch-and-bound nodes explored.
    pub nodes: u64,
}

/// Solves `problem` to optimality, or to the best found within `options.time_limit`.
pub fn solve(problem: &Problem, options: &SolveOptions) -> Solution {
    solve_within(problem, options, 0.0)
}

/// Solves `problem` to within `relative_gap` of the optimum (0: exactly): the search stops
/// exploring a subtree once its bound is at most `(1 + relative_gap)` times the best allocation
/// found. The solution's `bound` reports the largest such bound, so the proven gap is
/// `bound / value − 1`.
pub fn solve_within(problem: &Problem, options: &SolveOptions, relative_gap: f64) -> Solution {
    let compiled = Compiled::new(problem);
    solve_compiled(&compiled, options, relative_gap, None, &[], None).0
}

/// Solves `problem` starting from a known feasible selection `warm_start` (item numbers).
pub fn solve_warm(problem: &Problem, options: &SolveOptions, warm_start: &[usize]) -> Solution {
    let compiled = Compiled::new(problem);
    solve_compiled(&compiled, options, 0.0, None, warm_start, None).0
}

/// Solves an already compiled problem, ignoring the group `removed_group` (original group
/// number), starting from `warm_start` (a feasible selection, in original item numbers) if any.
/// Problems with few rows go to the LP-based search, which can start from `root_basis` (the
/// root LP basis of the same compiled problem, from an earlier solve) and returns its own.
pub(crate) fn solve_compiled(
    c: &Compiled,
    options: &SolveOptions,
    relative_gap: f64,
    removed_group: Option<usize>,
    warm_start: &[usize],
    root_basis: Option<&Basis>,
) -> (Solution, Option<Basis>) {
    let start = Instant::now();
    let deadline = options.time_limit.map(|t| start + t);
    if c.rows() <= MAX_LP_ROWS {
        let removed = removed_group.and_then(|g| c.group_compiled[g]);
        let warm: Vec<u32> = warm_start
            .iter()
            .filter_map(|&orig| c.item_original.iter().position(|&o| o == orig).map(|i| i as u32))
            .collect();
        let outcome = knapsack::solve(
            c,
            knapsack::Limits { deadline, relative_gap },
            removed,
            &warm,
            root_basis,
        );
        let mut chosen: Vec<usize> = outcome.chosen.iter().map(|&i| c.item_original[i as usize]).collect();
        chosen.sort_unstable();
        let value = outcome.value;
        let optimal = outcome.finished && !c.leaves_room(outcome.bound, value);
        let bound = if optimal { value } else { outcome.bound.max(value) };
        let solution = Solution { chosen, value, bound, optimal, finished: outcome.finished, nodes: outcome.nodes };
        return (solution, outcome.root_basis);
    }
    (lagrangian_search(c, deadline, relative_gap, removed_group, warm_start), None)
}

/// The Lagrangian branch-and-bound of this module (the one for set packing).
pub(crate) fn lagrangian_search(
    c: &Compiled,
    deadline: Option<Instant>,
    relative_gap: f64,
    removed_group: Option<usize>,
    warm_start: &[usize],
) -> Solution {
    let mut group_open = vec![true; c.groups()];
    if let Some(g) = removed_group.and_then(|g| c.group_compiled[g]) {
        group_open[g as usize] = false;
    }
    // The LP at the root (see `node_lp`), tightened by clique cuts (see `cliques`), which the
    // best-first search re-solves at every node and whose duals price the cuts as rows of the
    // node's bound. Without an optimal root (out of time, or too many rows for its inverse) the
    // search is depth first and prices the problem's own rows by subgradient steps alone.
    let mut lp = NodeLp::new(c, &c.capacity, &group_open)
        .and_then(|mut lp| (lp.primal(deadline) == LpStatus::Optimal).then_some(lp));
    let cuts = match lp.as_mut() {
        Some(lp) => cliques::strengthen_root(c, lp, deadline),
        None => Vec::new(),
    };
    let strengthened = (!cuts.is_empty()).then(|| c.with_cut_rows(&cuts));
    let mut search = Search::new(c, deadline, relative_gap);
    if let Some(s) = strengthened.as_ref() {
        search.strengthened = Some(s);
        search.lp_residual = vec![0; s.rows()];
    }
    search.group_open = group_open;
    search.lp = lp;
    // The warm start is checked, not trusted: it only ever raises the incumbent.
    let warm: Vec<u32> = warm_start
        .iter()
        .filter_map(|&orig| c.item_original.iter().position(|&o| o == orig).map(|i| i as u32))
        .filter(|&i| search.group_open[c.item_group[i as usize] as usize])
        .collect();
    search.try_selection(&warm);

    let root_live: Vec<u32> =
        (0..c.items() as u32).filter(|&i| search.group_open[c.item_group[i as usize] as usize]).collect();
    search.live[0] = root_live;
    // With the root LP solved, the search is best first on LP bounds (see `best_first`); without
    // it, depth first on subgradient bounds.
    let root_bound = if search.lp.is_some() { search.best_first() } else { search.node(0) };
    let finished = !search.aborted;
    let mut chosen: Vec<usize> = search.best_chosen.iter().map(|&i| c.item_original[i as usize]).collect();
    chosen.sort_unstable();
    let value: f64 = search.best_chosen.iter().map(|&i| c.value[i as usize]).sum();
    let found_bound = if finished { search.gap_bound.max(value) } else { root_bound.max(value) };
    let optimal = finished && !c.leaves_room(found_bound, value);
    let bound = if optimal { value } else { found_bound };
    Solution { chosen, value, bound, optimal, finished, nodes: search.nodes }
}

/// Subgradient steps at the root, where a good start for every node below is worth the most.
const ROOT_STEPS: usize = 500;
/// Subgradient steps at every other node.
const NODE_STEPS: usize = 16;

struct Search<'a> {
    c: &'a Compiled,
    deadline: Option<Instant>,
    relative_gap: f64,
    /// The largest bound of a subtree pruned only thanks to the relative gap.
    gap_bound: f64,
    aborted: bool,
    nodes: u64,
    residual: Vec<u64>,
    fixed_value: f64,
    group_open: Vec<bool>,
    chosen: Vec<u32>,
    best_value: f64,
    best_chosen: Vec<u32>,
    /// Live items at each depth.
    live: Vec<Vec<u32>>,
    /// Multipliers each depth starts from.
    lambda: Vec<Vec<f64>>,
    reduced: Vec<f64>,
    picks: Vec<u32>,
    gradient: Vec<f64>,
    scratch_used: Vec<u64>,
    scratch_order: Vec<u32>,
    /// The node LP, while it is in use.
    lp: Option<NodeLp>,
    /// The problem with the root's clique cuts as rows (see `cliques`), if it has any: the node
    /// LP carries them, and the bound at a node that solved it prices them at the LP's duals.
    strengthened: Option<&'a Compiled>,
    /// The strengthened problem's residual at the node.
    lp_residual: Vec<u64>,
    scratch_bounds: Vec<ItemBound>,
}

impl<'a> Search<'a> {
    fn new(c: &'a Compiled, deadline: Option<Instant>, relative_gap: f64) -> Self {
        Search {
            c,
            deadline,
            relative_gap: relative_gap.max(0.0),
            gap_bound: f64::NEG_INFINITY,
            aborted: false,
            nodes: 0,
            residual: c.capacity.clone(),
            fixed_value: 0.0,
            group_open: vec![true; c.groups()],
            chosen: Vec::new(),
            best_value: 0.0,
            best_chosen: Vec::new(),
            live: vec![Vec::new()],
            lambda: vec![vec![0.0; c.rows()]],
            reduced: vec![0.0; c.items()],
            picks: Vec::new(),
            gradient: vec![0.0; c.rows()],
            scratch_used: vec![0; c.rows()],
            scratch_order: Vec::new(),
            lp: None,
            strengthened: None,
            lp_residual: Vec::new(),
            scratch_bounds: Vec::new(),
        }
    }

    /// The bound cannot beat the incumbent (by more than the relative gap, if one was asked for;
    /// such a bound is remembered for the report).
    fn prunable(&mut self, bound: f64) -> bool {
        if !self.c.leaves_room(bound, self.best_value) {
            return true;
        }
        if self.relative_gap > 0.0 && bound - self.best_value <= self.relative_gap * self.best_value.abs() {
            self.gap_bound = self.gap_bound.max(bound);
            return true;
        }
        false
    }

    /// Greedily completes the current node's partial allocation with `order` (items in order of
    /// preference, at most one per group), keeping whatever fits; updates the incumbent.
    fn try_selection(&mut self, order: &[u32]) {
        let c = self.c;
        let mut used = std::mem::take(&mut self.scratch_used);
        used.copy_from_slice(&self.residual);
        let mut value = self.fixed_value;
        let mut taken: Vec<u32> = Vec::new();
        for &i in order {
            let g = c.item_group[i as usize];
            if !self.group_open[g as usize] || taken.iter().any(|&t| c.item_group[t as usize] == g) {
                continue;
            }
            if self.c.fits(i, &used) {
                for e in c.consumption(i) {
                    used[c.cons_row[e] as usize] -= c.cons_amount[e];
                }
                value += c.value[i as usize];
                taken.push(i);
            }
        }
        self.scratch_used = used;
        if value > self.best_value {
            self.best_value = value;
            self.best_chosen.clear();
            self.best_chosen.extend_from_slice(&self.chosen);
            self.best_chosen.extend_from_slice(&taken);
        }
    }

    fn out_of_time(&mut self) -> bool {
        if !self.aborted && self.nodes % 8 == 0 {
            if let Some(deadline) = self.deadline {
                self.aborted = Instant::now() >= deadline;
            }
        }
        self.aborted
    }

    /// Tries the relaxation's picks, most valuable reduced value first, as an allocation.
    fn try_picks(&mut self, picks: &[u32]) {
        let mut order = std::mem::take(&mut self.scratch_order);
        order.clear();
        order.extend_from_slice(picks);
        order.sort_unstable_by(|&a, &b| self.reduced[b as usize].total_cmp(&self.reduced[a as usize]));
        self.try_selection(&order);
        self.scratch_order = order;
    }

    /// Reduced-value fixing, after the node's bound `bound` was evaluated (so `self.reduced` and
    /// `picks` are its): forcing item i gives the bound `bound − best⁺(group) + rv_i` at these
    /// multipliers, and an item whose forced bound cannot beat the incumbent leaves `live` (and
    /// `picks`) for the whole subtree; `dropped` hears of each.
    fn fix_by_reduced_value(&mut self, bound: f64, live: &mut Vec<u32>, picks: &mut Vec<u32>, mut dropped: impl FnMut(u32)) {
        let c = self.c;
        let mut best_of_group = 0.0;
        let mut pick_index = 0;
        let mut group = u32::MAX;
        let mut kept = 0;
        for k in 0..live.len() {
            let i = live[k];
            let g = c.item_group[i as usize];
            if g != group {
                group = g;
                best_of_group = if pick_index < picks.len() && c.item_group[picks[pick_index] as usize] == g {
                    pick_index += 1;
                    self.reduced[picks[pick_index - 1] as usize]
                } else {
                    0.0
                };
            }
            if self.prunable(bound - best_of_group + self.reduced[i as usize]) {
                dropped(i);
            } else {
                live[kept] = i;
                kept += 1;
            }
        }
        live.truncate(kept);
        picks.retain(|&i| live.binary_search(&i).is_ok());
    }

    /// The relaxation's pick of the highest reduced value, or without picks the live item of the
    /// highest reduced value (`live` is not empty): where the bound has most to lose.
    fn most_valuable_pick(&self, live: &[u32], picks: &[u32]) -> u32 {
        let by_reduced = |a: &&u32, b: &&u32| self.reduced[**a as usize].total_cmp(&self.reduced[**b as usize]);
        *picks.iter().max_by(by_reduced).or_else(|| live.iter().max_by(by_reduced)).expect("live is not empty")
    }

    /// Explores the node whose live items are `self.live[depth]`; returns its bound.
    fn node(&mut self, depth: usize) -> f64 {
        self.nodes += 1;
        if self.out_of_time() {
            return f64::INFINITY;
        }
        let c = self.c;
        let live = std::mem::take(&mut self.live[depth]);
        if live.is_empty() {
            // Nothing left to choose: the partial allocation is complete.
            self.try_selection(&[]);
            self.live[depth] = live;
            return self.fixed_value;
        }
        // Subgradient steps start from the parent's multipliers.
        let mut lambda = std::mem::take(&mut self.lambda[depth]);
        let mut best_lambda = lambda.clone();
        let mut best_bound = f64::INFINITY;
        let steps = if depth == 0 { ROOT_STEPS } else { NODE_STEPS };
        let mut step_scale = if depth == 0 { 1.0 } else { 0.5 };
        let mut stale = 0;
        let mut picks = std::mem::take(&mut self.picks);
        for step in 0..=steps {
            let bound = lagrangian(c, self.fixed_value, &self.residual, &live, &lambda, &mut self.reduced, &mut picks);
            if bound < best_bound - 1e-12 * bound.abs() {
                best_bound = bound;
                best_lambda.copy_from_slice(&lambda);
                stale = 0;
            } else {
                stale += 1;
                if stale >= 5 {
                    step_scale *= 0.5;
                    stale = 0;
                    // Converged as far as subgradient steps will take it.
                    if step_scale < 1e-3 {
                        break;
                    }
                }
            }
            // The relaxation's own choice, repaired greedily, is often a good allocation.
            if depth == 0 || step == 0 {
                self.try_picks(&picks);
            }
            if self.prunable(best_bound) {
                break;
            }
            if depth == 0 && step % 16 == 15 && self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if step == steps
                || !subgradient_step(
                    c,
                    &self.residual,
                    &picks,
                    &mut lambda,
                    &mut self.gradient,
                    bound,
                    self.best_value,
                    step_scale,
                )
            {
                break;
            }
        }
        if self.prunable(best_bound) {
            self.picks = picks;
            self.lambda[depth] = lambda;
            self.live[depth] = live;
            return best_bound;
        }
        // Branch at the best multipliers found.
        lambda.copy_from_slice(&best_lambda);
        let bound = lagrangian(c, self.fixed_value, &self.residual, &live, &lambda, &mut self.reduced, &mut picks);
        let mut live = live;
        self.fix_by_reduced_value(bound, &mut live, &mut picks, |_| {});
        if live.is_empty() {
            self.try_selection(&[]);
            self.picks = picks;
            self.lambda[depth] = lambda;
            self.live[depth] = live;
            return best_bound;
        }
        let branch = self.most_valuable_pick(&live, &picks);
        self.picks = picks;
        if self.live.len() <= depth + 1 {
            self.live.push(Vec::new());
            self.lambda.push(vec![0.0; c.rows()]);
        }

        // Take `branch`.
        let group = c.item_group[branch as usize];
        for e in c.consumption(branch) {
            self.residual[c.cons_row[e] as usize] -= c.cons_amount[e];
        }
        self.fixed_value += c.value[branch as usize];
        self.group_open[group as usize] = false;
        self.chosen.push(branch);
        let mut child = std::mem::take(&mut self.live[depth + 1]);
        child.clear();
        child.extend(live.iter().copied().filter(|&i| c.item_group[i as usize] != group && self.c.fits(i, &self.residual)));
        self.live[depth + 1] = child;
        self.lambda[depth + 1].copy_from_slice(&lambda);
        self.node(depth + 1);
        self.chosen.pop();
        self.group_open[group as usize] = true;
        self.fixed_value -= c.value[branch as usize];
        for e in c.consumption(branch) {
            self.residual[c.cons_row[e] as usize] += c.cons_amount[e];
        }

        // Leave `branch` out.
        if !self.aborted && !self.prunable(best_bound) {
            let mut child = std::mem::take(&mut self.live[depth + 1]);
            child.clear();
            child.extend(live.iter().copied().filter(|&i| i != branch));
            self.live[depth + 1] = child;
            self.lambda[depth + 1].copy_from_slice(&lambda);
            self.node(depth + 1);
        }
        self.lambda[depth] = lambda;
        self.live[depth] = live;
        best_bound
    }
}

