//! Branch-and-bound for problems with few rows (a host's round: tens of XOR groups over 4–6
//! capacity rows) on the exact LP relaxation of [`super::lp`].
//!
//! Why a second search next to [`super::solver`]'s: on set packing (CATS, hundreds of rows) the
//! Lagrangian bound with subgradient steps is strong and cheap, but on a host's multi-dimensional
//! multiple-choice knapsack it stays well above the LP optimum and the search needs thousands of
//! nodes. Here every node solves its LP exactly (a child starts from its parent's optimal basis
//! and needs a few dual simplex pivots), and:
//!
//! - the bound is the Lagrangian `L(λ)` at the LP's row duals, which equals the LP optimum when
//!   the LP solved and is an upper bound for any `λ ≥ 0` regardless, so numerical trouble in the
//!   LP can weaken a bound but never make it wrong;
//! - reduced-cost fixing: an item (or a group's "nothing") whose forced bound
//!   `L − best(group) + reduced value` cannot beat the incumbent is disallowed in the subtree;
//!   when a group is down to one item that item is taken, and items that no longer fit beside the
//!   taken ones are disallowed too (exact, in integers);
//! - the root LP starts from the vertex of a greedy selection (the multiple-choice knapsack's
//!   greedy on the rows added up), a few tens of pivots from its optimum instead of one pivot per
//!   winning group from the empty selection;
//! - the incumbent starts from the LP solution rounded greedily and improved by local search
//!   (better bundles within a group, and, with time to spare, exchanges between two groups), and
//!   from the LP's integral part completed exactly (the few groups it splits get their best
//!   joint choice by enumeration), then from the optimum of a *core problem* (the groups the
//!   root LP is least sure about free, the rest held at its choice), before any branching:
//!   without it the search found its final incumbent only after most of its nodes;
//! - branching is on the LP's most fractional variable: take it (its group is closed to every
//!   other option) or disallow it; all branching only changes bounds, so the parent's basis stays
//!   dual feasible for both children.
//!
//! A node is pruned when its bound cannot beat the incumbent (the same tolerance as the other
//! search), or, with a relative gap `ε > 0`, when it cannot beat it by more than `ε·incumbent`; the
//! largest bound pruned that way is reported so the caller knows how far from optimal it may be.

use std::time::Instant;

use super::compiled::Compiled;
use super::lp::{Basis, Lp, LpStatus, MAX_LP_ROWS};

/// Search limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub deadline: Option<Instant>,
    pub relative_gap: f64,
}

/// What the search found, in compiled item numbers.
pub(crate) struct Outcome {
    pub chosen: Vec<u32>,
    pub value: f64,
    /// An upper bound on every feasible selection.
    pub bound: f64,
    /// The search finished (the bound is then within the relative gap of `value`).
    pub finished: bool,
    pub nodes: u64,
    /// The optimal basis of the root LP, for warm-starting related solves.
    pub root_basis: Option<Basis>,
}

/// Solves the compiled problem without the groups in `removed_group` (compiled numbering),
/// starting from `warm` (a feasible selection, compiled item numbers) and, if given, from a root
/// basis of the same problem with fewer groups removed.
pub(crate) fn solve(
    c: &Compiled,
    limits: Limits,
    removed_group: Option<u32>,
    warm: &[u32],
    root_basis: Option<&Basis>,
) -> Outcome {
    let mut allowed = vec![true; c.items() + c.rows() + c.groups()];
    if let Some(g) = removed_group {
        for i in c.group_start[g as usize]..c.group_start[g as usize + 1] {
            allowed[i as usize] = false;
        }
    }
    let warm: Vec<u32> = warm.iter().copied().filter(|&i| allowed[i as usize]).collect();
    // The root LP, solved once here: its duals choose the core problem, and its basis starts the
    // search's root.
    let mut lp = Lp::new(c);
    // Without a basis to start from, the primal simplex starts from a greedy selection's vertex.
    let greedy = if root_basis.is_none() { greedy_selection(c, &allowed) } else { Vec::new() };
    let mut basis = root_basis.cloned().unwrap_or_else(|| lp.basis_of(&greedy));
    let status = if root_basis.is_some() { lp.dual(&mut basis, &allowed) } else { lp.primal(&mut basis, &allowed) };
    let root_solved = status == LpStatus::Optimal;
    // The core problem first: the groups the relaxation is least sure about free, every other
    // group held at the relaxation's choice. Its optimum is found in few nodes and is usually the
    // whole problem's, or close to it; without it the search found its final incumbent late
    // (after most of its nodes, on synthetic hosts) and spent those nodes under a weaker
    // incumbent. It pays for itself over a long search; under a short deadline a solve is mostly
    // its root, and a second root first made rounds with a 1 ms limit per solve slower (8.2 s
    // against 6.9 s for 10 000 hosts), so it runs only with no deadline or a generous one.
    let time_left = limits.deadline.is_none_or(|deadline| deadline > Instant::now() + CORE_MIN_TIME);
    let core = if root_solved && time_left && c.groups() > CORE_GROUPS {
        core_allowed(&lp, &basis, &allowed)
    } else {
        None
    };
    let start = if root_solved { Some(&basis) } else { root_basis };
    let mut search = Search::new(c, limits, allowed.clone(), start, lp);
    // The root's exchange search costs about a millisecond on a 40-workload host, five times the
    // rest of the root; under a short deadline that time is better spent in the search.
    search.root_exchanges = time_left;
    // An empty warm start would only be the local search building a selection from nothing,
    // one best move at a time: a pass over every option per winner, and no better than the
    // greedy selection that follows.
    if !warm.is_empty() {
        search.try_selection(&warm, &allowed, false);
    }
    search.try_selection(&greedy, &allowed, false);
    let mut core_nodes = 0;
    if let Some(core) = core {
        // Under a deadline the core gets half the time left, so that the whole search still
        // gets to prove what it can.
        let now = Instant::now();
        let core_limits = Limits { deadline: limits.deadline.map(|deadline| now + (deadline - now) / 2), ..limits };
        let mut core_search = Search::new(c, core_limits, core, start, Lp::new(c));
        // The whole search's root tries the exchanges anyway; here they would double the root's
        // cost, which is most of a time-limited solve.
        core_search.root_exchanges = false;
        core_search.try_selection(&warm, &allowed, false);
        core_search.node(0);
        core_nodes = core_search.nodes;
        let core_chosen = core_search.best_chosen;
        search.try_selection(&core_chosen, &allowed, false);
    }
    let root_bound = search.node(0);
    let finished = !search.aborted;
    let value = search.best_value;
    let bound = if finished { value.max(search.gap_bound) } else { root_bound.max(value) };
    let mut chosen = search.best_chosen;
    chosen.sort_unstable();
    Outcome { chosen, value, bound, finished, nodes: search.nodes + core_nodes, root_basis: search.root_basis }
}

/// The LP's row duals made non-negative, the multipliers of the Lagrangian bound (valid for any
/// `λ ≥ 0`); rows past the problem's are 0.
fn lagrange_multipliers(lp: &Lp) -> [f64; MAX_LP_ROWS] {
    let mut lambda = [0.0f64; MAX_LP_ROWS];
    for (l, &dual) in lambda.iter_mut().zip(&lp.lambda) {
        *l = dual.max(0.0);
    }
    lambda
}

/// Item `i`'s value less its consumption priced at `lambda`.
fn reduced_value(c: &Compiled, lambda: &[f64; MAX_LP_ROWS], i: u32) -> f64 {
    let mut rv = c.value[i as usize];
    for e in c.consumption(i) {
        rv -= lambda[c.cons_row[e] as usize] * c.cons_fraction[e];
    }
    rv
}

/// A feasible selection built greedily, without the LP: every group's allowed options are
/// reduced to the upper concave hull of (size, value), size being the sum of the fractions of
/// each row's capacity an option uses, with "nothing" at the origin; the hull's steps of all
/// groups are then taken in order of value per unit of size, each one that fits (in every row,
/// exactly) replacing the group's current option. This is the classic greedy of the
/// multiple-choice knapsack with the rows added up; its vertex starts the root LP close to its
/// optimum, and it is a first incumbent.
fn greedy_selection(c: &Compiled, allowed: &[bool]) -> Vec<u32> {
    let size = |i: u32| -> f64 { c.consumption(i).map(|e| c.cons_fraction[e]).sum() };
    // Each step as one sortable number: its value per size (positive, so its bits order like the
    // number), then its group and the item it leads to; sorting plain integers costs a fraction
    // of sorting tuples by a float comparison, and this sort was a fifth of the greedy.
    // Sized up front (a step per option at most): growing them step by step was a visible cost.
    let largest_group = (0..c.groups()).map(|g| (c.group_start[g + 1] - c.group_start[g]) as usize).max().unwrap_or(0);
    let mut steps: Vec<u128> = Vec::with_capacity(c.items());
    let mut hull: Vec<(f64, f64, u32)> = Vec::with_capacity(largest_group + 1);
    // A group's options by size, the more valuable first of equal sizes: as integers again, the
    // size above the item (a group's items run from the most valuable). An empty sum is −0.0,
    // whose bits would sort last: sizes are made +0.0 or positive first.
    let mut options: Vec<u128> = Vec::with_capacity(largest_group);
    for g in 0..c.groups() {
        options.clear();
        options.extend(
            (c.group_start[g]..c.group_start[g + 1])
                .filter(|&i| allowed[i as usize])
                .map(|i| {
                    let size = size(i);
                    u128::from(if size > 0.0 { size } else { 0.0 }.to_bits()) << 32 | u128::from(i)
                }),
        );
        options.sort_unstable();
        hull.clear();
        hull.push((0.0, 0.0, u32::MAX));
        for (s, i) in options.iter().map(|&key| (f64::from_bits((key >> 32) as u64), key as u32)) {
            let v = c.value[i as usize];
            let &(last_s, last_v, _) = hull.last().expect("the origin");
            if v <= last_v {
                continue; // no more value for more size
            }
            if s <= last_s {
                // As small as the last point and worth more: it replaces it.
                hull.pop();
            }
            // Drop points below the segment to the new one (slopes must decrease).
            while hull.len() >= 2 {
                let (s1, v1, _) = hull[hull.len() - 2];
                let (s2, v2, _) = hull[hull.len() - 1];
                if (v2 - v1) * (s - s1) <= (v - v1) * (s2 - s1) {
                    hull.pop();
                } else {
                    break;
                }
            }
            hull.push((s, v, i));
        }
        for pair in hull.windows(2) {
            let ((s1, v1, _), (s2, v2, i)) = (pair[0], pair[1]);
            let efficiency = if s2 > s1 { (v2 - v1) / (s2 - s1) } else { f64::INFINITY };
            steps.push(u128::from(efficiency.to_bits()) << 64 | u128::from(g as u32) << 32 | u128::from(i));
        }
    }
    steps.sort_unstable();
    let mut left = c.capacity.clone();
    let mut current: Vec<u32> = vec![u32::MAX; c.groups()];
    let release = |left: &mut [u64], item: u32| c.consumption(item).for_each(|e| left[c.cons_row[e] as usize] += c.cons_amount[e]);
    let take = |left: &mut [u64], item: u32| c.consumption(item).for_each(|e| left[c.cons_row[e] as usize] -= c.cons_amount[e]);
    for (g, i) in steps.iter().rev().map(|&step| ((step >> 32) as u32, step as u32)) {
        // The step replaces the group's current option: it must fit with that one released.
        let previous = current[g as usize];
        if previous != u32::MAX {
            release(&mut left, previous);
        }
        if c.fits(i, &left) {
            take(&mut left, i);
            current[g as usize] = i;
        } else if previous != u32::MAX {
            take(&mut left, previous);
        }
    }
    current.into_iter().filter(|&i| i != u32::MAX).collect()
}

/// Marks "nothing" among a split group's options in [`Search::complete_split_groups`].
const NO_OPTION: u32 = u32::MAX;
/// Partial combinations [`best_combination`] visits at most: it is a heuristic, and six split
/// groups of nine options each could otherwise cost more than the rest of a node.
const COMBINATION_BUDGET: usize = 2048;

/// Depth-first enumeration of one option per split group from the `k`-th on, within `left`,
/// keeping the most valuable combination in `best`; a branch that cannot beat it even with
/// every remaining group's most valuable option is cut, and the whole enumeration stops after
/// `budget` partial combinations (keeping the best found).
#[allow(clippy::too_many_arguments)] // the enumeration's state, threaded through the recursion
fn best_combination(
    c: &Compiled,
    split: &[Vec<u32>],
    most_from: &[f64],
    k: usize,
    left: &mut [u64],
    value: f64,
    chosen: &mut Vec<u32>,
    best: &mut (f64, Vec<u32>),
    budget: &mut usize,
) {
    if *budget == 0 || value + most_from[k] <= best.0 {
        return;
    }
    *budget -= 1;
    if k == split.len() {
        best.0 = value;
        best.1.clone_from(chosen);
        return;
    }
    for &option in &split[k] {
        if option == NO_OPTION {
            best_combination(c, split, most_from, k + 1, left, value, chosen, best, budget);
            continue;
        }
        if !c.fits(option, left) {
            continue;
        }
        for e in c.consumption(option) {
            left[c.cons_row[e] as usize] -= c.cons_amount[e];
        }
        chosen.push(option);
        best_combination(c, split, most_from, k + 1, left, value + c.value[option as usize], chosen, best, budget);
        chosen.pop();
        for e in c.consumption(option) {
            left[c.cons_row[e] as usize] += c.cons_amount[e];
        }
    }
}

/// Groups left free in the core problem (more when the relaxation is fractional in more).
const CORE_GROUPS: usize = 12;
/// The least time left under a deadline for the core problem to run (some twenty roots).
const CORE_MIN_TIME: std::time::Duration = std::time::Duration::from_millis(20);

/// The core problem's allowed variables: every group the optimal relaxation (`lp` at `basis`)
/// splits, and the groups whose best two options are closest in reduced value, up to
/// [`CORE_GROUPS`], keep their options; every other group keeps only the option the relaxation
/// chose. The relaxation's own integral part is then feasible in it (the split groups can take
/// nothing or their options), and it is a restriction: its optimum is a feasible selection.
fn core_allowed(lp: &Lp, basis: &Basis, allowed: &[bool]) -> Option<Vec<bool>> {
    let c = lp.compiled();
    let lambda = lagrange_multipliers(lp);
    // Per group: the option the relaxation uses most, whether it is split, and the margin
    // between its two best reduced values.
    let mut chosen = Vec::with_capacity(c.groups());
    let mut ranked: Vec<(bool, f64, usize)> = Vec::with_capacity(c.groups());
    for g in 0..c.groups() {
        let slack = lp.group_slack(g);
        let options = std::iter::once(slack).chain(c.group_start[g]..c.group_start[g + 1]);
        let (mut top, mut top_x) = (None, 0.0f64);
        let (mut first, mut second) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for v in options.filter(|&v| allowed[v as usize]) {
            let x = lp.value(basis, v);
            if top.is_none() || x > top_x {
                (top, top_x) = (Some(v), x);
            }
            let rv = if v == slack { 0.0 } else { reduced_value(c, &lambda, v) };
            if rv > first {
                (first, second) = (rv, first);
            } else if rv > second {
                second = rv;
            }
        }
        let top = top?;
        chosen.push(top);
        let split = top_x < 1.0 - 1e-9;
        ranked.push((split, first - second, g));
    }
    // Split groups first, then by margin.
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1)));
    let free = ranked.iter().filter(|r| r.0).count().max(CORE_GROUPS);
    let mut core = allowed.to_vec();
    for &(_, margin, g) in &ranked[free.min(ranked.len())..] {
        if !margin.is_finite() {
            continue; // a single option: nothing to hold
        }
        let slack = lp.group_slack(g);
        for v in std::iter::once(slack).chain(c.group_start[g]..c.group_start[g + 1]) {
            if v != chosen[g] {
                core[v as usize] = false;
            }
        }
    }
    Some(core)
}

struct Search<'a> {
    c: &'a Compiled,
    lp: Lp<'a>,
    deadline: Option<Instant>,
    relative_gap: f64,
    aborted: bool,
    nodes: u64,
    best_value: f64,
    best_chosen: Vec<u32>,
    /// The largest bound of a subtree pruned only thanks to the relative gap.
    gap_bound: f64,
    /// Variables allowed at each depth (items, row slacks, group slacks, as numbered by the LP).
    allowed: Vec<Vec<bool>>,
    /// The basis each depth starts from.
    basis: Vec<Basis>,
    residual: Vec<u64>,
    reduced: Vec<f64>,
    best_of_group: Vec<f64>,
    root_basis: Option<Basis>,
    /// The root starts from a given (dual feasible) basis rather than the slack basis.
    warm_root: bool,
    // Scratch space of `explore`, kept between nodes so that the node loop does not allocate.
    order: Vec<(f64, u32)>,
    preference: Vec<u32>,
    /// Scratch of `explore`: the items of positive reduced value as sortable keys.
    ranked: Vec<u128>,
    /// Scratch of `tighten`: whether each group is still open.
    open: Vec<bool>,
    /// The root's rounding heuristic also tries exchanges between two groups.
    root_exchanges: bool,
    /// Scratch of `improve`: the ways a group can give up capacity, (value lost, group, option).
    downgrades: Vec<(f64, usize, Option<u32>)>,
}

impl<'a> Search<'a> {
    /// A search of the problem with `allowed` variables, on `lp` (a relaxation of `c`), whose
    /// root starts from `basis` (dual simplex; it must be dual feasible) or else from the slack
    /// basis (primal simplex).
    fn new(c: &'a Compiled, limits: Limits, allowed: Vec<bool>, basis: Option<&Basis>, lp: Lp<'a>) -> Self {
        Search {
            c,
            deadline: limits.deadline,
            relative_gap: limits.relative_gap.max(0.0),
            aborted: false,
            nodes: 0,
            best_value: 0.0,
            best_chosen: Vec::with_capacity(c.groups()),
            gap_bound: f64::NEG_INFINITY,
            allowed: vec![allowed],
            basis: vec![basis.cloned().unwrap_or_else(|| lp.slack_basis())],
            residual: c.capacity.clone(),
            reduced: vec![0.0; c.items()],
            best_of_group: vec![0.0; c.groups()],
            root_basis: None,
            warm_root: basis.is_some(),
            order: Vec::new(),
            preference: Vec::new(),
            ranked: Vec::new(),
            open: Vec::with_capacity(c.groups()),
            root_exchanges: true,
            downgrades: Vec::new(),
            lp,
        }
    }

    /// The bound cannot beat the incumbent (exactly, up to float rounding).
    fn cannot_improve(&self, bound: f64) -> bool {
        !self.c.leaves_room(bound, self.best_value)
    }

    /// The bound cannot beat the incumbent by more than the relative gap; remembers the bound
    /// when only the gap allowed the pruning.
    fn prune(&mut self, bound: f64) -> bool {
        if self.cannot_improve(bound) {
            return true;
        }
        if self.relative_gap > 0.0 && bound - self.best_value <= self.relative_gap * self.best_value.abs() {
            self.gap_bound = self.gap_bound.max(bound);
            return true;
        }
        false
    }

    /// Checked at every node: reading the clock costs tens of nanoseconds, a node microseconds,
    /// and a budget of a few hundred microseconds has no room for nodes past the deadline.
    fn out_of_time(&mut self) -> bool {
        if !self.aborted {
            if let Some(deadline) = self.deadline {
                self.aborted = Instant::now() >= deadline;
            }
        }
        self.aborted
    }

    fn items_of(&self, g: usize) -> std::ops::Range<u32> {
        self.c.group_start[g]..self.c.group_start[g + 1]
    }

    /// Takes the items that are the only option left in their group, and disallows items that no
    /// longer fit beside them. `false` if the node has no feasible selection.
    fn tighten(&mut self, allowed: &mut [bool]) -> bool {
        let c = self.c;
        loop {
            let mut residual = std::mem::take(&mut self.residual);
            residual.copy_from_slice(&c.capacity);
            let mut feasible = true;
            let mut open = std::mem::take(&mut self.open);
            open.clear();
            for g in 0..c.groups() {
                let slack = allowed[self.lp.group_slack(g) as usize];
                let mut only = None;
                let mut count = 0;
                for i in self.items_of(g) {
                    if allowed[i as usize] {
                        count += 1;
                        only = Some(i);
                    }
                }
                match (slack, count) {
                    (false, 0) => feasible = false,
                    (false, 1) => {
                        let i = only.expect("one allowed item");
                        for e in c.consumption(i) {
                            let r = c.cons_row[e] as usize;
                            match residual[r].checked_sub(c.cons_amount[e]) {
                                Some(left) => residual[r] = left,
                                None => feasible = false,
                            }
                        }
                        open.push(false);
                        continue;
                    }
                    _ => {}
                }
                open.push(true);
            }
            if !feasible {
                self.residual = residual;
                self.open = open;
                return false;
            }
            let mut changed = false;
            for g in (0..c.groups()).filter(|&g| open[g]) {
                for i in self.items_of(g) {
                    if allowed[i as usize] && !self.c.fits(i, &residual) {
                        allowed[i as usize] = false;
                        changed = true;
                    }
                }
            }
            self.residual = residual;
            self.open = open;
            if !changed {
                return true;
            }
        }
    }

    /// Greedily builds a selection from `order` (items in order of preference; at most one per
    /// group is kept, the first that fits), starting from nothing; updates the incumbent.
    fn try_selection(&mut self, order: &[u32], allowed: &[bool], exchanges: bool) {
        let c = self.c;
        let mut used = c.capacity.clone();
        let mut taken_group = vec![false; c.groups()];
        let mut taken = Vec::with_capacity(c.groups());
        for &i in order {
            let g = c.item_group[i as usize] as usize;
            if taken_group[g] || !allowed[i as usize] || !self.c.fits(i, &used) {
                continue;
            }
            for e in c.consumption(i) {
                used[c.cons_row[e] as usize] -= c.cons_amount[e];
            }
            taken_group[g] = true;
            taken.push(i);
        }
        self.improve(&mut taken, &mut used, allowed, exchanges);
    }

    /// Local search from the feasible selection `taken` (with `left` capacity): moves within a
    /// group to a better item that fits, and exchanges in two groups at once whose total value
    /// rises (only if `exchanges`: they cost groups² x options², worth it at the root only); then
    /// offers the result as the incumbent.
    fn improve(&mut self, taken: &mut Vec<u32>, left: &mut [u64], allowed: &[bool], exchanges: bool) {
        let c = self.c;
        let rows = c.rows();
        let mut choice: Vec<Option<u32>> = vec![None; c.groups()];
        for &i in taken.iter() {
            choice[c.item_group[i as usize] as usize] = Some(i);
        }
        let value_of = |x: Option<u32>| x.map_or(0.0, |i| c.value[i as usize]);
        // Capacity left if `drop` were released: `left + consumption(drop)`.
        let released = |left: &[u64], drop: Option<u32>, out: &mut Vec<u64>| {
            out.clear();
            out.extend_from_slice(left);
            if let Some(d) = drop {
                for e in c.consumption(d) {
                    out[c.cons_row[e] as usize] += c.cons_amount[e];
                }
            }
        };
        let mut room = Vec::with_capacity(rows);
        let mut stuck = vec![false; c.groups()];
        let mut room2 = Vec::with_capacity(rows);
        let take = |left: &mut [u64], drop: Option<u32>, add: Option<u32>| {
            if let Some(d) = drop {
                for e in c.consumption(d) {
                    left[c.cons_row[e] as usize] += c.cons_amount[e];
                }
            }
            if let Some(a) = add {
                for e in c.consumption(a) {
                    left[c.cons_row[e] as usize] -= c.cons_amount[e];
                }
            }
        };
        let mut rounds = 0;
        loop {
            rounds += 1;
            // Best single-group move. A group's options are sorted by value, so its scan stops at
            // the first that fits, or at the first that would gain no more than the best so far.
            // A group with no better option that fits is *stuck*, and stays so as long as no row
            // gains capacity: moves that only use more of every row skip it.
            let mut best: Option<(f64, usize, u32)> = None;
            for g in 0..c.groups() {
                if stuck[g] {
                    continue;
                }
                let current = choice[g];
                let mut released_current = false;
                let mut beaten = false;
                for i in self.items_of(g) {
                    let gain = c.value[i as usize] - value_of(current);
                    if gain <= 1e-12 {
                        break;
                    }
                    if best.is_some_and(|b| gain <= b.0) {
                        beaten = true;
                        break;
                    }
                    if !released_current {
                        released(left, current, &mut room);
                        released_current = true;
                    }
                    if allowed[i as usize] && self.c.fits(i, &room) {
                        best = Some((gain, g, i));
                        beaten = true;
                        break;
                    }
                }
                stuck[g] = !beaten;
            }
            if let Some((_, g, i)) = best {
                let frees_a_row = choice[g].is_some_and(|old| {
                    c.consumption(old).any(|e| {
                        let r = c.cons_row[e];
                        let new = c.consumption(i).find(|&f| c.cons_row[f] == r).map_or(0, |f| c.cons_amount[f]);
                        c.cons_amount[e] > new
                    })
                });
                if frees_a_row {
                    stuck.iter_mut().for_each(|s| *s = false);
                }
                stuck[g] = false;
                take(left, choice[g], Some(i));
                choice[g] = Some(i);
                if rounds < 4 * c.groups() + 8 {
                    continue;
                }
            }
            if !exchanges {
                break;
            }
            // An exchange: group a gives up (part of) its item, group b takes a better one. The
            // ways to give up are listed once per pass, cheapest first, so that each upgrade
            // looks only at those that leave it a gain above the best exchange found so far.
            let mut downgrades = std::mem::take(&mut self.downgrades);
            downgrades.clear();
            for (a, &current_a) in choice.iter().enumerate() {
                let Some(current_a) = current_a else { continue };
                let options = std::iter::once(None)
                    .chain(self.items_of(a).filter(|&i| allowed[i as usize] && i != current_a).map(Some));
                downgrades.extend(options.map(|option| (c.value[current_a as usize] - value_of(option), a, option)));
            }
            downgrades.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
            let mut exchange: Option<(f64, usize, Option<u32>, usize, u32)> = None;
            let min_gain = 1e-9 * self.best_value.abs().max(1.0);
            for b in 0..c.groups() {
                let current_b = choice[b];
                released(left, current_b, &mut room);
                for j in self.items_of(b) {
                    let gain_b = c.value[j as usize] - value_of(current_b);
                    if !allowed[j as usize] || gain_b <= 1e-12 || self.c.fits(j, &room) {
                        continue;
                    }
                    for &(cost, a, option) in &downgrades {
                        let gain = gain_b - cost;
                        if gain <= exchange.as_ref().map_or(min_gain, |x| x.0) {
                            break; // every later way to give up costs more
                        }
                        if a == b {
                            continue;
                        }
                        released(&room, choice[a], &mut room2);
                        let mut ok = self.c.fits(j, &room2);
                        if ok {
                            if let Some(o) = option {
                                // Both must fit together.
                                ok = c.consumption(o).all(|e| {
                                    let r = c.cons_row[e] as usize;
                                    let need_j = c
                                        .consumption(j)
                                        .find(|&f| c.cons_row[f] as usize == r)
                                        .map_or(0, |f| c.cons_amount[f]);
                                    c.cons_amount[e] + need_j <= room2[r]
                                });
                            }
                        }
                        if ok {
                            exchange = Some((gain, a, option, b, j));
                        }
                    }
                }
            }
            self.downgrades = downgrades;
            match exchange {
                Some((_, a, option, b, j)) if rounds < 4 * c.groups() + 8 => {
                    // Release both groups before taking anything: only together do they fit.
                    take(left, choice[a], None);
                    take(left, choice[b], None);
                    take(left, None, option);
                    take(left, None, Some(j));
                    choice[a] = option;
                    choice[b] = Some(j);
                    // An exchange can free capacity in any row: every group may move again.
                    stuck.iter_mut().for_each(|s| *s = false);
                }
                _ => break,
            }
        }
        taken.clear();
        taken.extend(choice.iter().flatten());
        let value: f64 = taken.iter().map(|&i| c.value[i as usize]).sum();
        if value > self.best_value {
            self.best_value = value;
            self.best_chosen.clone_from(taken);
        }
    }

    /// The relaxation's integral part, completed exactly: every group that the LP solution at
    /// `basis` gives wholly to one option keeps it, and the groups it splits (at most one per
    /// row) get the best combination of their allowed options that fits beside them, found by
    /// enumeration; the local search then fills what is left. Rounding the split groups one at
    /// a time loses most of what separates the rounded LP from the optimum (on 40-workload
    /// hosts the rounding alone was 0.8 % below the best allocation known, in the median), and
    /// with so few of them choosing them jointly is cheap.
    fn complete_split_groups(&mut self, basis: &Basis, allowed: &[bool]) {
        /// At most this many split groups are enumerated (a basis splits at most one per row).
        const MAX_SPLIT: usize = 6;
        let c = self.c;
        let mut left = c.capacity.clone();
        let mut fixed: Vec<u32> = Vec::with_capacity(c.groups());
        // The options of each split group, most valuable first; `NO_OPTION` is "nothing".
        let mut split: Vec<Vec<u32>> = Vec::new();
        for g in 0..c.groups() {
            let slack = self.lp.group_slack(g);
            let whole = std::iter::once(slack)
                .chain(self.items_of(g))
                .find(|&v| allowed[v as usize] && self.lp.value(basis, v) >= 1.0 - 1e-9);
            match whole {
                Some(v) if v == slack => {}
                Some(i) => {
                    for e in c.consumption(i) {
                        let r = c.cons_row[e] as usize;
                        let Some(rest) = left[r].checked_sub(c.cons_amount[e]) else {
                            return; // rounding in the LP: its integral part does not fit exactly
                        };
                        left[r] = rest;
                    }
                    fixed.push(i);
                }
                None => {
                    // Options are checked against `left` later, when every fixed group is in it.
                    let mut options: Vec<u32> = self.items_of(g).filter(|&i| allowed[i as usize]).collect();
                    options.sort_unstable_by(|&a, &b| c.value[b as usize].total_cmp(&c.value[a as usize]));
                    if allowed[slack as usize] {
                        options.push(NO_OPTION);
                    }
                    split.push(options);
                }
            }
        }
        if split.is_empty() || split.len() > MAX_SPLIT {
            return;
        }
        // An option that does not fit beside the fixed groups alone never fits: dropping it here
        // saves the enumeration its checks and tightens its bound.
        for options in &mut split {
            options.retain(|&o| o == NO_OPTION || c.fits(o, &left));
        }
        // What the split groups from the k-th on could add at most.
        let mut most_from = vec![0.0; split.len() + 1];
        for k in (0..split.len()).rev() {
            let top = split[k].first().filter(|&&o| o != NO_OPTION).map_or(0.0, |&o| c.value[o as usize]);
            most_from[k] = most_from[k + 1] + top;
        }
        let mut best = (f64::NEG_INFINITY, Vec::new());
        let mut chosen = Vec::with_capacity(split.len());
        let mut budget = COMBINATION_BUDGET;
        best_combination(c, &split, &most_from, 0, &mut left, 0.0, &mut chosen, &mut best, &mut budget);
        fixed.extend(best.1);
        self.try_selection(&fixed, allowed, false);
    }

    /// `L(λ)` at the LP's row duals over the allowed variables; fills `reduced` (of the allowed
    /// items) and `best_of_group`. `None` when some group has nothing allowed.
    fn lagrangian_bound(&mut self, allowed: &[bool]) -> Option<f64> {
        let c = self.c;
        let lambda = lagrange_multipliers(&self.lp);
        // Every row's right-hand side is 1 (a fraction of capacity).
        let mut bound: f64 = lambda.iter().sum();
        for g in 0..c.groups() {
            let mut best = if allowed[self.lp.group_slack(g) as usize] { 0.0 } else { f64::NEG_INFINITY };
            // Only allowed items' reduced values are read (fixing, rounding, branching).
            for i in self.items_of(g).filter(|&i| allowed[i as usize]) {
                let rv = reduced_value(c, &lambda, i);
                self.reduced[i as usize] = rv;
                if rv > best {
                    best = rv;
                }
            }
            if best == f64::NEG_INFINITY {
                return None;
            }
            self.best_of_group[g] = best;
            bound += best;
        }
        Some(bound)
    }

    /// Explores the node whose allowed variables are `self.allowed[depth]`, from the basis
    /// `self.basis[depth]`; returns its bound.
    fn node(&mut self, depth: usize) -> f64 {
        self.nodes += 1;
        // The root is always explored: its bound is the one a stopped search reports.
        if depth > 0 && self.out_of_time() {
            return f64::INFINITY;
        }
        // Both are this node's own: its parent sets them afresh before each child.
        let mut allowed = std::mem::take(&mut self.allowed[depth]);
        let mut basis = std::mem::take(&mut self.basis[depth]);
        let bound = self.explore(depth, &mut allowed, &mut basis);
        self.allowed[depth] = allowed;
        self.basis[depth] = basis;
        bound
    }

    fn explore(&mut self, depth: usize, allowed: &mut Vec<bool>, basis: &mut Basis) -> f64 {
        let c = self.c;
        if !self.tighten(allowed) {
            return f64::NEG_INFINITY;
        }
        let every_slack_allowed = (0..c.groups()).all(|g| allowed[self.lp.group_slack(g) as usize]);
        let mut status = if depth == 0 && !self.warm_root {
            self.lp.primal(basis, allowed)
        } else {
            self.lp.dual(basis, allowed)
        };
        if status == LpStatus::Failed && every_slack_allowed {
            *basis = self.lp.slack_basis();
            status = self.lp.primal(basis, allowed);
        }
        if status == LpStatus::Infeasible {
            if every_slack_allowed {
                // Cannot be: the taken items fit and every other group may stay empty.
                status = LpStatus::Failed;
            } else {
                return f64::NEG_INFINITY;
            }
        }
        if depth == 0 && status == LpStatus::Optimal {
            self.root_basis = Some(basis.clone());
        }
        let Some(bound) = self.lagrangian_bound(allowed) else {
            return f64::NEG_INFINITY;
        };
        if self.prune(bound) {
            return bound;
        }

        // Incumbent: the LP solution if integral, else rounded greedily (then local search).
        let mut fractional: Option<(f64, u32)> = None;
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        let mut integral = status == LpStatus::Optimal;
        for &v in basis.key.iter().chain(&basis.nonkey) {
            let x = self.lp.value(basis, v);
            let g = self.lp.group_of(v);
            if (v as usize) < c.items() && allowed[v as usize] && x > 1e-9 {
                order.push((x, v));
            }
            if x > 1e-9 && x < 1.0 - 1e-9 {
                integral = false;
                if g != u32::MAX && allowed[v as usize] {
                    let spread = x.min(1.0 - x);
                    if fractional.is_none_or(|f| spread > f.0) {
                        fractional = Some((spread, v));
                    }
                }
            }
        }
        // The rounding heuristic runs at the root, on integral LP solutions and at every fourth
        // node; the ranking it needs is only built then.
        if depth == 0 || integral || self.nodes % 4 == 0 {
            order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            let mut preference = std::mem::take(&mut self.preference);
            preference.clear();
            preference.extend(order.iter().map(|&(_, v)| v));
            if !integral {
                // Fill the rest by reduced value, the relaxation's own ranking.
                // Each as one integer, its reduced value (positive: its bits order like the
                // number) above its item, since sorting integers costs a fraction of sorting by a
                // float comparison through an index.
                let mut ranked = std::mem::take(&mut self.ranked);
                ranked.clear();
                ranked.extend(
                    (0..c.items() as u32)
                        .filter(|&i| allowed[i as usize] && self.reduced[i as usize] > 0.0)
                        .map(|i| u128::from(self.reduced[i as usize].to_bits()) << 32 | u128::from(i)),
                );
                ranked.sort_unstable();
                preference.extend(ranked.iter().rev().map(|&key| key as u32));
                self.ranked = ranked;
            }
            self.try_selection(&preference, allowed, depth == 0 && self.root_exchanges);
            self.preference = preference;
            if !integral && status == LpStatus::Optimal {
                self.complete_split_groups(basis, allowed);
            }
        }
        self.order = order;
        if self.prune(bound) {
            return bound;
        }
        // Out of time after the heuristics (a root under a short deadline): no child would be
        // explored, so fixing and choosing a branch would be wasted.
        if self.out_of_time() {
            return bound;
        }

        // Reduced-cost fixing at these multipliers.
        let mut fixed_any = false;
        for g in 0..c.groups() {
            let base = bound - self.best_of_group[g];
            let slack = self.lp.group_slack(g) as usize;
            if allowed[slack] && self.prune(base) {
                allowed[slack] = false;
                fixed_any = true;
            }
            for i in self.items_of(g) {
                if allowed[i as usize] && self.prune(base + self.reduced[i as usize]) {
                    allowed[i as usize] = false;
                    fixed_any = true;
                }
            }
        }
        if fixed_any && !self.tighten(allowed) {
            return bound;
        }

        // Branch on the group of the most fractional variable: its allowed options, ordered by
        // size (total consumption, "nothing" first), split where the LP's mass is halved; each
        // child keeps one side. Both children cut off the LP solution, and the bound moves in
        // both (excluding one bundle alone would let its neighbour in size take its place).
        let split = match fractional
            .filter(|&(_, v)| allowed[v as usize] && self.members(self.lp.group_of(v) as usize, allowed).len() >= 2)
        {
            Some((_, v)) => Some(self.split_group(self.lp.group_of(v) as usize, allowed, basis)),
            None => self.fallback_branch(allowed).map(|v| {
                let g = self.lp.group_of(v) as usize;
                let rest: Vec<u32> = self.members(g, allowed).into_iter().filter(|&u| u != v).collect();
                (vec![v], rest, true)
            }),
        };
        let Some((low, high, low_first)) = split else {
            // Every group is decided: the taken items fit (checked by `tighten`).
            let taken: Vec<u32> = (0..c.items() as u32).filter(|&i| allowed[i as usize]).collect();
            self.try_selection(&taken, allowed, false);
            return bound;
        };
        if self.allowed.len() <= depth + 1 {
            self.allowed.push(Vec::new());
            self.basis.push(basis.clone());
        }
        let sides = if low_first { [&low, &high] } else { [&high, &low] };
        for excluded in sides.into_iter().rev() {
            if self.aborted || self.prune(bound) {
                break;
            }
            let mut child = std::mem::take(&mut self.allowed[depth + 1]);
            child.clone_from(allowed);
            for &v in excluded.iter() {
                child[v as usize] = false;
            }
            self.allowed[depth + 1] = child;
            self.basis[depth + 1].clone_from(basis);
            self.node(depth + 1);
        }
        bound
    }

    /// The allowed options of group `g`: its items and its "nothing" slack.
    fn members(&self, g: usize, allowed: &[bool]) -> Vec<u32> {
        let slack = self.lp.group_slack(g);
        std::iter::once(slack).chain(self.items_of(g)).filter(|&v| allowed[v as usize]).collect()
    }

    /// Splits group `g`'s allowed options by size where the LP solution's mass is closest to
    /// half, with options the LP uses on both sides. Returns (smaller, larger, keep-smaller-first:
    /// whether the smaller side carries more of the LP's mass).
    fn split_group(&self, g: usize, allowed: &[bool], basis: &Basis) -> (Vec<u32>, Vec<u32>, bool) {
        let size = |v: u32| -> f64 {
            if (v as usize) < self.c.items() {
                self.c.consumption(v).map(|e| self.c.cons_fraction[e]).sum()
            } else {
                0.0
            }
        };
        let mut members: Vec<(f64, u32, f64)> =
            self.members(g, allowed).into_iter().map(|v| (size(v), v, self.lp.value(basis, v).max(0.0))).collect();
        members.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let first_used = members.iter().position(|m| m.2 > 1e-9).unwrap_or(0);
        let last_used = members.iter().rposition(|m| m.2 > 1e-9).unwrap_or(members.len() - 1);
        // Cut after position k, first_used <= k < last_used.
        let total: f64 = members.iter().map(|m| m.2).sum();
        let mut cut = first_used;
        let mut best = f64::INFINITY;
        let mut mass = 0.0;
        for (k, m) in members.iter().enumerate().take(last_used.max(first_used + 1)) {
            mass += m.2;
            if k >= first_used && k < last_used.max(first_used + 1) {
                let off = (mass - total / 2.0).abs();
                if off < best {
                    best = off;
                    cut = k;
                }
            }
        }
        let cut = cut.min(members.len().saturating_sub(2));
        let low: Vec<u32> = members[..=cut].iter().map(|m| m.1).collect();
        let high: Vec<u32> = members[cut + 1..].iter().map(|m| m.1).collect();
        let low_mass: f64 = members[..=cut].iter().map(|m| m.2).sum();
        (low, high, low_mass * 2.0 >= total)
    }

    /// A variable to branch on when the LP gives no fractional one: the allowed option of highest
    /// reduced value in a group that still has two or more. `None` when every group is decided.
    fn fallback_branch(&self, allowed: &[bool]) -> Option<u32> {
        let c = self.c;
        let mut best: Option<(f64, u32)> = None;
        for g in 0..c.groups() {
            let slack = self.lp.group_slack(g);
            let members: Vec<(f64, u32)> = self
                .items_of(g)
                .filter(|&i| allowed[i as usize])
                .map(|i| (self.reduced[i as usize], i))
                .chain(allowed[slack as usize].then_some((0.0, slack)))
                .collect();
            if members.len() < 2 {
                continue;
            }
            let top = members.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0)).expect("two members");
            if best.is_none_or(|b| top.0 > b.0) {
                best = Some(top);
            }
        }
        best.map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clearing::auction::joint_problem;
    use crate::clearing::solver::lagrangian_search;
    use crate::clearing::SyntheticHost;

    fn synthetic(workloads: usize, seed: u64) -> Compiled {
        let host = SyntheticHost { workloads, bundles: 8, oversubscription: 2.5 }.generate(seed);
        Compiled::new(&joint_problem(std::slice::from_ref(&host), &[0], &[], &[]).problem)
    }

    fn exact() -> Limits {
        Limits { deadline: None, relative_gap: 0.0 }
    }

    #[test]
    fn agrees_with_the_lagrangian_search_on_synthetic_hosts() {
        for seed in 0..12 {
            let c = synthetic(14, seed);
            let started = Instant::now();
            let lp = solve(&c, exact(), None, &[], None);
            let lp_time = started.elapsed();
            let started = Instant::now();
            let reference = lagrangian_search(&c, None, 0.0, None, &[]);
            let reference_time = started.elapsed();
            println!(
                "seed {seed}: LP search {} nodes {:?}, Lagrangian search {} nodes {:?}",
                lp.nodes, lp_time, reference.nodes, reference_time
            );
            assert!(lp.finished && reference.optimal);
            assert!((lp.value - reference.value).abs() <= 1e-9 * lp.value.max(1.0), "{} vs {}", lp.value, reference.value);
            assert!(lp.bound >= lp.value);
        }
    }

    #[test]
    fn a_relative_gap_bounds_the_distance_to_the_optimum() {
        for seed in 0..12 {
            let c = synthetic(14, 100 + seed);
            let optimum = solve(&c, exact(), None, &[], None).value;
            let within = solve(&c, Limits { deadline: None, relative_gap: 0.01 }, None, &[], None);
            assert!(within.finished);
            assert!(within.bound >= optimum - 1e-9 * optimum, "bound {} below the optimum {optimum}", within.bound);
            assert!(within.bound <= within.value * 1.01 + 1e-9, "bound {} too far above {}", within.bound, within.value);
            assert!(within.value <= optimum + 1e-9 * optimum);
        }
    }

    #[test]
    fn a_search_out_of_time_still_reports_a_valid_finite_bound() {
        for seed in 0..6 {
            let c = synthetic(30, 200 + seed);
            let optimum = solve(&c, exact(), None, &[], None).value;
            // The deadline has passed before the search starts: only the roots are explored.
            let late = solve(&c, Limits { deadline: Some(Instant::now()), relative_gap: 0.0 }, None, &[], None);
            assert!(late.bound.is_finite(), "the root's bound is reported");
            assert!(late.bound >= optimum - 1e-9 * optimum, "bound {} below the optimum {optimum}", late.bound);
            assert!(late.value <= optimum + 1e-9 * optimum && late.value > 0.0);
        }
    }

    #[test]
    fn the_local_search_stops_only_where_no_single_group_move_gains() {
        // It skips groups it found stuck until a move frees capacity in some row; a wrong skip
        // would leave a gaining move behind. Checked here against every move, by enumeration.
        for seed in 0..12 {
            let c = synthetic(40, 500 + seed);
            let allowed = vec![true; c.items() + c.rows() + c.groups()];
            let mut search = Search::new(&c, exact(), allowed.clone(), None, Lp::new(&c));
            // From the empty selection and from the greedy one with every other group dropped.
            let greedy = greedy_selection(&c, &allowed);
            let every_other: Vec<u32> = greedy.iter().copied().step_by(2).collect();
            for start in [Vec::new(), every_other] {
                let mut taken = start.clone();
                let mut left = c.capacity.clone();
                for &i in &taken {
                    for e in c.consumption(i) {
                        left[c.cons_row[e] as usize] -= c.cons_amount[e];
                    }
                }
                search.improve(&mut taken, &mut left, &allowed, false);
                let mut choice = vec![None; c.groups()];
                for &i in &taken {
                    choice[c.item_group[i as usize] as usize] = Some(i);
                }
                for g in 0..c.groups() {
                    let mut room = left.clone();
                    if let Some(current) = choice[g] {
                        for e in c.consumption(current) {
                            room[c.cons_row[e] as usize] += c.cons_amount[e];
                        }
                    }
                    let current_value = choice[g].map_or(0.0, |i| c.value[i as usize]);
                    for i in c.group_start[g]..c.group_start[g + 1] {
                        assert!(
                            !(c.value[i as usize] > current_value + 1e-12 && c.fits(i, &room)),
                            "seed {seed}: group {g} could still move to item {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_move_that_frees_a_row_lets_a_stuck_group_move_again() {
        // Group a trades row 0 for row 1, which makes room in row 0 for group b's upgrade; b
        // found no room for it before a moved.
        let mut problem = crate::clearing::Problem::new(vec![10, 10]);
        let a = problem.add_group();
        let a_row0 = problem.add_item(a, 5.0, [(0, 6)]).unwrap();
        problem.add_item(a, 6.0, [(1, 6)]).unwrap();
        let b = problem.add_group();
        let b_small = problem.add_item(b, 1.0, [(0, 1)]).unwrap();
        let b_large = problem.add_item(b, 10.0, [(0, 8)]).unwrap();
        let c = Compiled::new(&problem);
        let compiled = |original: usize| c.item_original.iter().position(|&o| o == original).unwrap() as u32;
        let allowed = vec![true; c.items() + c.rows() + c.groups()];
        let mut search = Search::new(&c, exact(), allowed.clone(), None, Lp::new(&c));
        let mut taken = vec![compiled(a_row0), compiled(b_small)];
        let mut left = c.capacity.clone();
        for &i in &taken {
            for e in c.consumption(i) {
                left[c.cons_row[e] as usize] -= c.cons_amount[e];
            }
        }
        search.improve(&mut taken, &mut left, &allowed, false);
        assert!(taken.contains(&compiled(b_large)), "b should have moved up once a freed row 0: {taken:?}");
        assert_eq!(search.best_value, 16.0);
    }

    #[test]
    fn the_greedy_selection_fits_and_its_vertex_reaches_the_same_lp_optimum() {
        for seed in 0..12 {
            let c = synthetic(40, 300 + seed);
            let allowed = vec![true; c.items() + c.rows() + c.groups()];
            let greedy = greedy_selection(&c, &allowed);
            assert!(!greedy.is_empty());
            let mut used = vec![0u64; c.rows()];
            let mut groups = std::collections::HashSet::new();
            for &i in &greedy {
                assert!(groups.insert(c.item_group[i as usize]), "two items of one group");
                for e in c.consumption(i) {
                    used[c.cons_row[e] as usize] += c.cons_amount[e];
                }
            }
            assert!(used.iter().zip(&c.capacity).all(|(u, cap)| u <= cap), "the greedy selection overfills a row");
            // The LP optimum is the same from the empty selection's vertex and the greedy one's,
            // and the greedy start needs fewer pivots.
            let objective = |lp: &Lp| {
                let lambda = lagrange_multipliers(lp);
                let mut bound: f64 = lambda.iter().sum();
                for g in 0..c.groups() {
                    let best = (c.group_start[g]..c.group_start[g + 1])
                        .map(|i| reduced_value(&c, &lambda, i))
                        .fold(0.0f64, f64::max);
                    bound += best;
                }
                bound
            };
            let mut from_empty = Lp::new(&c);
            let mut basis = from_empty.slack_basis();
            assert_eq!(from_empty.primal(&mut basis, &allowed), LpStatus::Optimal);
            let mut from_greedy = Lp::new(&c);
            let mut basis = from_greedy.basis_of(&greedy);
            assert_eq!(from_greedy.primal(&mut basis, &allowed), LpStatus::Optimal);
            let (a, b) = (objective(&from_empty), objective(&from_greedy));
            assert!((a - b).abs() <= 1e-9 * a, "LP optimum {a} from the empty vertex, {b} from the greedy one");
            assert!(from_greedy.iterations < from_empty.iterations);
        }
    }

    #[test]
    fn a_removed_group_never_wins_and_a_warm_root_gives_the_same_answer() {
        let c = synthetic(14, 7);
        let main = solve(&c, exact(), None, &[], None);
        let root = main.root_basis.clone().expect("the root LP solves");
        for &winner in &main.chosen {
            let g = c.item_group[winner as usize];
            let others: Vec<u32> = main.chosen.iter().copied().filter(|&i| i != winner).collect();
            let warm = solve(&c, exact(), Some(g), &others, Some(&root));
            let cold = solve(&c, exact(), Some(g), &[], None);
            assert!(warm.chosen.iter().all(|&i| c.item_group[i as usize] != g));
            assert!((warm.value - cold.value).abs() <= 1e-9 * cold.value.max(1.0));
        }
    }
}
