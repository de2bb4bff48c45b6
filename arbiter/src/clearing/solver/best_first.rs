//! Best-first branch-and-bound on the node LP: the search for every many-row (set-packing)
//! problem whose root LP was solved.
//!
//! Why: on CATS `regions_g256` the root LP, even tightened by clique cuts, sits 3.9 % above the
//! optimum, and the depth-first search that ran before this one (LP bounds near the root,
//! subgradient steps below) spent its 60 s in subtrees that a tighter bound would have cut off:
//! it was 5.6 % short of the optimum in allocation and far from a proof, and given the optimum
//! as a warm start it still did not finish. What closes such a gap is a bound that falls with
//! depth, at every node, and an order that spends the nodes where the bound is highest. Here
//! every node re-solves the LP with the root's cuts (dual simplex from wherever the last node
//! left the basis, which stays dual feasible under any bound changes), prices its bound as the
//! Lagrangian at the LP's duals (valid whatever the LP's accuracy), and the open nodes wait in a
//! heap by bound. A node's children are explored at once (a *plunge*) while they stay in the
//! upper three quarters of the gap between the incumbent and the best open bound: a child's LP
//! starts from its parent's basis, which a jump across the tree does not, and plunges are what
//! find good allocations.
//!
//! Branching is by pseudo-costs (the bound's fall per unit of LP value moved, learnt from every
//! child), and where they know too little about a fractional item, its two children's LPs are
//! solved briefly first (strong branching, as in reliability branching): on `regions_g256` this
//! halved the nodes to the proof (6 514 to 3 051) and the time, though it slows some small
//! instances (a few ms) that a handful of nodes would have finished.
//!
//! A node is stored as its branching decision and a link to its parent, plus the items that
//! reduced-value fixing removed there (valid for its whole subtree, since the incumbent only
//! improves); entering a node replays its path from the root.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::super::bounds::lagrangian;
use super::super::node_lp::{ItemBound, LpStatus};
use super::Search;

/// A decision that takes its item (the others exclude it).
const TAKE: u32 = 1 << 31;
/// No parent, no decision.
const NONE: u32 = u32::MAX;
/// A child is explored at once while its bound is at least this share of the way from the
/// incumbent to the best open bound. On CATS `regions_g256`: 0.25 proved it in 113 s (6 514
/// nodes), 0.5 in 136 s (6 797), 0.1 in 134 s (7 682); 0.75 and 0 (plunge whenever the bound
/// beats the incumbent) did not within 200 and 150 s.
const PLUNGE: f64 = 0.25;
/// Dual simplex pivots a node may spend before its bound falls back to the LP's current duals.
/// Best-first order jumps between distant nodes, which can take hundreds of pivots (on CATS
/// `regions_g256` a few hundred on average).
const MAX_PIVOTS: u64 = 2000;

/// Strong branching (reliability branching's measurement): at a node where some fractional
/// items have pseudo-costs from fewer than [`RELIABLE`] branches either way, up to this many of
/// them (the most fractional first) have both children's LPs solved for real, within
/// [`STRONG_PIVOTS`] pivots each, and what their bounds fell by is learnt as if branched. On
/// CATS `regions_g256` (family-25 EPYC): 8, 60, 1 proved it in 95 s (3 051 nodes); 16 candidates
/// 99 s, 150 pivots 99 s, 2 branches for reliability 98 s; without strong branching 180 s.
const STRONG_CANDIDATES: usize = 8;
const STRONG_PIVOTS: u64 = 60;
const RELIABLE: u32 = 1;

/// An LP value that is neither 0 nor 1 (beyond the LP's rounding).
fn is_fractional(x: f64) -> bool {
    x > 1e-6 && x < 1.0 - 1e-6
}

/// One node of the tree.
struct Record {
    parent: u32,
    /// The item this node's branch took (with [`TAKE`]) or excluded; [`NONE`] at the root.
    decision: u32,
    /// Items removed by reduced-value fixing at this node, for all of its descendants.
    excluded: Vec<u32>,
    /// The parent's bound and the branched item's LP value there, to learn pseudo-costs from.
    parent_bound: f64,
    fraction: f64,
}

/// Per item, the bound's fall per unit of LP value moved by branching: sums and counts for the
/// branches that took it (up) and that excluded it (down).
struct PseudoCosts {
    up: Vec<(f64, u32)>,
    down: Vec<(f64, u32)>,
    /// Over all items: (sum, count) up and down, the estimate for an item not yet branched on.
    all_up: (f64, u32),
    all_down: (f64, u32),
}

impl PseudoCosts {
    fn new(items: usize) -> Self {
        PseudoCosts { up: vec![(0.0, 0); items], down: vec![(0.0, 0); items], all_up: (0.0, 0), all_down: (0.0, 0) }
    }

    fn learn(&mut self, item: u32, take: bool, fraction: f64, fall: f64) {
        let (moved, own, all) = if take {
            (1.0 - fraction, &mut self.up[item as usize], &mut self.all_up)
        } else {
            (fraction, &mut self.down[item as usize], &mut self.all_down)
        };
        if moved > 1e-6 {
            let per_unit = fall.max(0.0) / moved;
            own.0 += per_unit;
            own.1 += 1;
            all.0 += per_unit;
            all.1 += 1;
        }
    }

    fn estimate(own: (f64, u32), all: (f64, u32)) -> Option<f64> {
        if own.1 > 0 {
            Some(own.0 / own.1 as f64)
        } else if all.1 > 0 {
            Some(all.0 / all.1 as f64)
        } else {
            None
        }
    }

    /// The fractional item whose branches promise the largest falls of the bound (product of
    /// the two estimates), or `None` before anything was learnt.
    fn reliable(&self, item: u32) -> bool {
        self.up[item as usize].1 >= RELIABLE && self.down[item as usize].1 >= RELIABLE
    }

    fn choose(&self, candidates: impl Iterator<Item = (u32, f64)>) -> Option<u32> {
        let mut best: Option<(f64, u32)> = None;
        for (i, x) in candidates {
            let up = Self::estimate(self.up[i as usize], self.all_up)?;
            let down = Self::estimate(self.down[i as usize], self.all_down)?;
            let score = ((1.0 - x) * up).max(1e-6) * (x * down).max(1e-6);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

/// An open node and the bound it inherited from its parent.
#[derive(PartialEq)]
struct Open {
    bound: f64,
    node: u32,
}

impl Eq for Open {}

impl Ord for Open {
    fn cmp(&self, other: &Self) -> Ordering {
        // Highest bound first; of equal bounds the newer (deeper) node, for determinism.
        self.bound.total_cmp(&other.bound).then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Open {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<'a> Search<'a> {
    /// Searches the tree below the current (root) state best first, with the node LP the search
    /// holds; returns the largest bound left unexplored (−∞ when the search finished). The
    /// incumbent, the node count, `aborted` and `gap_bound` are the search's own.
    pub(super) fn best_first(&mut self) -> f64 {
        let c = self.c;
        let base_open = self.group_open.clone();
        let mut records =
            vec![Record { parent: NONE, decision: NONE, excluded: Vec::new(), parent_bound: 0.0, fraction: 0.0 }];
        let mut pseudo = PseudoCosts::new(c.items());
        let mut open: BinaryHeap<Open> = BinaryHeap::new();
        let mut next = Some(Open { bound: f64::INFINITY, node: 0 });
        // `excluded_at[i] == node` while entering `node` marks item i excluded on its path.
        let mut excluded_at = vec![NONE; c.items()];
        let mut path = Vec::new();
        let mut live = Vec::new();
        let mut picks = Vec::new();
        let mut dropped = Vec::new();
        // The node LP's duals of the rows its bound prices (the strengthened problem's, if any).
        let mut lp_lambda = vec![0.0; self.strengthened.map_or(c.rows(), |s| s.rows())];
        let mut unexplored = f64::NEG_INFINITY;
        let mut diving = true;
        let mut strong = Vec::new();
        if let Some(lp) = self.lp.as_mut() {
            lp.use_steepest_edge();
        }
        loop {
            let plunged = next.is_some();
            let Some(Open { bound: inherited, node: id }) = next.take().or_else(|| open.pop()) else {
                break;
            };
            if self.prunable(inherited) {
                if !plunged {
                    // The best open bound cannot beat the incumbent: neither can any other.
                    open.clear();
                }
                continue;
            }
            self.nodes += 1;
            if self.out_of_time() {
                unexplored = inherited;
                break;
            }
            self.enter(id, &records, &base_open, &mut excluded_at, &mut path, &mut live);
            if live.is_empty() {
                self.try_selection(&[]);
                continue;
            }
            let lp_solved = self.solve_node_lp(&live, &mut lp_lambda);
            if !lp_solved {
                // Out of pivots: the LP's current duals are still multipliers (at least 0), so
                // the Lagrangian at them is a valid if weaker bound.
                if let Some(lp) = self.lp.as_ref() {
                    lp.row_duals(&mut lp_lambda);
                }
            }
            let bound = self.lp_node_bound(&live, &lp_lambda, &mut picks).min(inherited);
            if lp_solved && id != 0 {
                let r = &records[id as usize];
                pseudo.learn(r.decision & !TAKE, r.decision & TAKE != 0, r.fraction, r.parent_bound - bound);
            }
            self.try_picks(&picks);
            if self.prunable(bound) {
                continue;
            }
            dropped.clear();
            self.fix_by_reduced_value(bound, &mut live, &mut picks, |i| dropped.push(i));
            records[id as usize].excluded.extend_from_slice(&dropped);
            if live.is_empty() {
                self.try_selection(&[]);
                continue;
            }
            // Branch where the pseudo-costs promise the bound falls most on both sides, after
            // measuring the items they know too little about; until they know anything, on the
            // most fractional item.
            if lp_solved {
                self.strong_branch(&live, &mut pseudo, &mut strong);
            }
            let branch = match self.lp.as_ref() {
                Some(lp) if lp_solved => pseudo
                    .choose(live.iter().map(|&i| (i, lp.item_value(i))).filter(|&(_, x)| is_fractional(x)))
                    .or_else(|| self.lp_branch(&live)),
                _ => None,
            };
            let branch = branch.unwrap_or_else(|| self.most_valuable_pick(&live, &picks));
            let fraction = self.lp.as_ref().map_or(0.5, |lp| lp.item_value(branch));
            // The first plunge from the root takes every branch (a dive for a first good
            // allocation); later plunges follow the LP's leaning.
            diving &= plunged;
            let take_first = diving || !lp_solved || fraction >= 0.5;
            let children = [branch | TAKE, branch].map(|decision| {
                records.push(Record { parent: id, decision, excluded: Vec::new(), parent_bound: bound, fraction });
                Open { bound, node: records.len() as u32 - 1 }
            });
            let [take, leave] = children;
            let (first, second) = if take_first { (take, leave) } else { (leave, take) };
            let best_open = open.peek().map_or(bound, |o| o.bound.max(bound));
            if bound - self.best_value >= PLUNGE * (best_open - self.best_value) {
                next = Some(first);
            } else {
                open.push(first);
            }
            open.push(second);
        }
        if let Some(top) = open.peek() {
            unexplored = unexplored.max(top.bound);
        }
        unexplored
    }

    /// Puts the search in node `id`'s state: its taken items chosen (residual, value, groups),
    /// and `live` the items it may still take (open group, not excluded on its path, fitting).
    fn enter(
        &mut self,
        id: u32,
        records: &[Record],
        base_open: &[bool],
        excluded_at: &mut [u32],
        path: &mut Vec<u32>,
        live: &mut Vec<u32>,
    ) {
        let c = self.c;
        path.clear();
        let mut at = id;
        while at != NONE {
            path.push(at);
            at = records[at as usize].parent;
        }
        self.residual.copy_from_slice(&c.capacity);
        self.fixed_value = 0.0;
        self.group_open.copy_from_slice(base_open);
        self.chosen.clear();
        for &node in path.iter().rev() {
            let record = &records[node as usize];
            if node != id {
                for &i in &record.excluded {
                    excluded_at[i as usize] = id;
                }
            }
            match record.decision {
                NONE => {}
                d if d & TAKE != 0 => {
                    let i = d & !TAKE;
                    for e in c.consumption(i) {
                        self.residual[c.cons_row[e] as usize] -= c.cons_amount[e];
                    }
                    self.fixed_value += c.value[i as usize];
                    self.group_open[c.item_group[i as usize] as usize] = false;
                    self.chosen.push(i);
                }
                i => excluded_at[i as usize] = id,
            }
        }
        live.clear();
        live.extend((0..c.items() as u32).filter(|&i| {
            self.group_open[c.item_group[i as usize] as usize] && excluded_at[i as usize] != id && c.fits(i, &self.residual)
        }));
    }

    /// Brings the node LP's bounds to this node (the chosen items at 1, the `live` ones free,
    /// every other at 0), re-solves it, and on success puts its row duals in `lambda` and tries
    /// its rounding as an allocation. `false` when there is no LP or it did not reach an optimum
    /// within [`MAX_PIVOTS`].
    fn solve_node_lp(&mut self, live: &[u32], lambda: &mut [f64]) -> bool {
        let Some(lp) = self.lp.as_mut() else {
            return false;
        };
        let mut wanted = std::mem::take(&mut self.scratch_bounds);
        wanted.clear();
        wanted.resize(self.c.items(), ItemBound::Zero);
        for &i in live {
            wanted[i as usize] = ItemBound::Free;
        }
        for &i in &self.chosen {
            wanted[i as usize] = ItemBound::One;
        }
        // The LP skips the items whose bounds are already these.
        for (i, &want) in wanted.iter().enumerate() {
            lp.set_bound(i as u32, want);
        }
        self.scratch_bounds = wanted;
        if lp.dual(MAX_PIVOTS, self.deadline) != LpStatus::Optimal {
            return false;
        }
        lp.row_duals(lambda);
        let mut order = std::mem::take(&mut self.scratch_order);
        lp.rounding_order(&mut order);
        self.try_selection(&order);
        self.scratch_order = order;
        true
    }

    /// The Lagrangian bound at a node whose LP was solved, at the LP's duals `lp_lambda`: over
    /// the strengthened problem's rows when there are cuts.
    fn lp_node_bound(&mut self, live: &[u32], lp_lambda: &[f64], picks: &mut Vec<u32>) -> f64 {
        let Some(s) = self.strengthened else {
            return lagrangian(self.c, self.fixed_value, &self.residual, live, lp_lambda, &mut self.reduced, picks);
        };
        self.lp_residual.copy_from_slice(&s.capacity);
        for &i in &self.chosen {
            for e in s.consumption(i) {
                self.lp_residual[s.cons_row[e] as usize] -= s.cons_amount[e];
            }
        }
        lagrangian(s, self.fixed_value, &self.lp_residual, live, lp_lambda, &mut self.reduced, picks)
    }

    /// Solves both children's LPs (within [`STRONG_PIVOTS`] each, from the node's basis) for the
    /// most fractional live items whose pseudo-costs are not yet reliable, and learns each
    /// bound's fall. A stopped dual simplex still bounds its LP (its basis stays dual feasible),
    /// so every fall learnt is at most the real one; an infeasible child falls to the incumbent.
    fn strong_branch(&mut self, live: &[u32], pseudo: &mut PseudoCosts, candidates: &mut Vec<(u32, f64)>) {
        let Some(lp) = self.lp.as_ref() else {
            return;
        };
        candidates.clear();
        candidates.extend(
            live.iter().map(|&i| (i, lp.item_value(i))).filter(|&(i, x)| is_fractional(x) && !pseudo.reliable(i)),
        );
        candidates.sort_by(|a, b| (a.1 - 0.5).abs().total_cmp(&(b.1 - 0.5).abs()).then(a.0.cmp(&b.0)));
        candidates.truncate(STRONG_CANDIDATES);
        let parent = lp.value();
        for &(i, x) in candidates.iter() {
            for take in [true, false] {
                if self.deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                let mut child = lp.clone();
                child.set_bound(i, if take { ItemBound::One } else { ItemBound::Zero });
                let fall = match child.dual(STRONG_PIVOTS, self.deadline) {
                    LpStatus::Infeasible => parent - self.best_value,
                    _ => parent - child.value(),
                };
                pseudo.learn(i, take, x, fall);
            }
        }
    }

    /// The live item whose value in the node LP's point is closest to one half, if any is
    /// fractional. (Branching on the one closest to 1 instead, a dive towards the LP's integral
    /// part, needed 5 223 nodes on CATS `paths_g256` against 45, both with the LP re-solved at
    /// every node.)
    fn lp_branch(&self, live: &[u32]) -> Option<u32> {
        let lp = self.lp.as_ref()?;
        live.iter()
            .map(|&i| (lp.item_value(i), i))
            .filter(|&(x, _)| is_fractional(x))
            .min_by(|a, b| (a.0 - 0.5).abs().total_cmp(&(b.0 - 0.5).abs()))
            .map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{lagrangian_search, Search};
    use crate::clearing::compiled::Compiled;
    use crate::clearing::lp::tests::Rng;
    use crate::clearing::node_lp::tests::set_packing;
    use std::time::{Duration, Instant};

    /// The depth-first search on subgradient bounds alone, without the LP: an independent exact
    /// search to compare with.
    fn depth_first_optimum(c: &Compiled) -> f64 {
        let mut search = Search::new(c, None, 0.0);
        search.live[0] = (0..c.items() as u32).collect();
        search.node(0);
        search.best_value
    }

    /// The selection is one item per group at most, fits every row, and is worth `value`.
    fn assert_feasible(c: &Compiled, chosen: &[usize], value: f64) {
        let mut left = c.capacity.clone();
        let mut groups = Vec::new();
        let mut sum = 0.0;
        for &original in chosen {
            let i = c.item_original.iter().position(|&o| o == original).expect("a compiled item") as u32;
            groups.push(c.item_group[i as usize]);
            assert!(c.fits(i, &left), "item {original} does not fit what is left");
            for e in c.consumption(i) {
                left[c.cons_row[e] as usize] -= c.cons_amount[e];
            }
            sum += c.value[i as usize];
        }
        groups.sort_unstable();
        let before = groups.len();
        groups.dedup();
        assert_eq!(before, groups.len(), "two items of one group");
        assert!((sum - value).abs() <= 1e-9 * sum.abs().max(1.0), "worth {sum}, reported {value}");
    }

    #[test]
    fn best_first_proves_what_the_depth_first_search_proves() {
        let mut rng = Rng(17);
        let mut fractional = 0;
        for case in 0..400 {
            let p = set_packing(&mut rng);
            let c = Compiled::new(&p);
            let solution = lagrangian_search(&c, None, 0.0, None, &[]);
            let reference = depth_first_optimum(&c);
            assert!(solution.optimal, "case {case}: not proven");
            assert!(
                (solution.value - reference).abs() <= 1e-9 * reference.max(1.0),
                "case {case}: best first {} against depth first {reference}",
                solution.value
            );
            assert_feasible(&c, &solution.chosen, solution.value);
            fractional += usize::from(solution.nodes > 1);
        }
        assert!(fractional >= 25, "only {fractional} of 400 cases branched at all");
    }

    #[test]
    fn a_stopped_search_keeps_a_valid_bound_and_a_feasible_allocation() {
        let mut rng = Rng(5);
        for case in 0..40 {
            let p = set_packing(&mut rng);
            let c = Compiled::new(&p);
            let optimum = depth_first_optimum(&c);
            let solution = lagrangian_search(&c, Some(Instant::now() + Duration::from_micros(300)), 0.0, None, &[]);
            assert!(solution.bound >= optimum - 1e-9 * optimum.max(1.0), "case {case}: bound {} below {optimum}", solution.bound);
            assert!(solution.value <= optimum + 1e-9 * optimum.max(1.0), "case {case}");
            assert_feasible(&c, &solution.chosen, solution.value);
        }
    }
}
