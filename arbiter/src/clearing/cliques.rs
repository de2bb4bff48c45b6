//! Clique cuts: tightening the root LP of the set-packing search before it branches.
//!
//! Why: the LP relaxation sees each row on its own. Three bids that pairwise share a different
//! good can each be taken at one half, worth one and a half bids, although any allocation holds at
//! most one of them. On CATS `regions_g256` such points put the LP bound 8.2 % above the optimum,
//! and no amount of branching near the root closes a gap that every node inherits. Any set of
//! pairwise conflicting items (a *clique* of the conflict graph) holds at most one item of an
//! allocation, so `Σ x_i ≤ 1` over it is valid for every allocation and cuts such points off.
//!
//! The method, at the root only: build the conflict graph once (two items conflict when they
//! belong to one group, or together exceed some row's capacity), then repeat: find cliques that
//! the LP's current point violates (greedily, from each used item, taking the most used
//! neighbours first), extend each to a maximal clique with unused items (a *lifted* cut stays
//! valid and also binds the items the branches will move to), add them to the LP as rows and
//! re-solve it with the dual simplex, then drop the cuts that no longer bind (each row makes every
//! later pivot dearer: on CATS `arbitrary_g50_b500_0001`, keeping all 156 cuts instead of the 46
//! that bind took 4.5 times the pivots at 4 times the cost each). It stops when no clique is
//! violated, when the bound stops falling, at a cap on the rows, or at the deadline. The search
//! then re-solves the LP with the cuts at the nodes near the root and prices them in those
//! nodes' bounds as rows of the problem (capacity 1, each member using 1).
//!
//! Separation is heuristic (finding the most violated clique is NP-hard) and that is fine: every
//! cut it returns is a true clique, so the bound stays valid whatever it misses.

use std::collections::HashSet;
use std::time::Instant;

use super::compiled::Compiled;
use super::node_lp::{LpStatus, NodeLp, MAX_ROWS};

/// The most items a conflict graph is built for: its bit matrix is `items²` bits, 8 MB here.
const MAX_ITEMS: usize = 8192;
/// The most conflicting pairs enumerated while building the graph; beyond that (a row that
/// nearly every item uses heavily) building it would cost more than the cuts could save.
const MAX_PAIRS: usize = 4_000_000;
/// How far a clique's LP sum must exceed 1 to be worth a row: shallower cuts move the bound by
/// less than the re-solve costs.
const MIN_VIOLATION: f64 = 0.01;
/// Cuts added per round (the most violated ones).
const CUTS_PER_ROUND: usize = 100;
/// Separation rounds at the root.
const MAX_ROUNDS: usize = 30;
/// A round that lowers the LP bound by less than this fraction ends the rounds: the cuts are
/// tailing off.
const TAILING_OFF: f64 = 1e-4;
/// LP values within this of 0 count as unused.
const USED: f64 = 1e-6;

/// Which items conflict, as a symmetric bit matrix.
pub(crate) struct ConflictGraph {
    items: usize,
    /// 64-bit words per row of the matrix.
    words: usize,
    bits: Vec<u64>,
}

impl ConflictGraph {
    /// The conflicts among `c`'s items, or `None` when there are too many items or pairs for the
    /// graph to pay off.
    pub fn new(c: &Compiled) -> Option<Self> {
        let items = c.items();
        if items > MAX_ITEMS {
            return None;
        }
        let words = items.div_ceil(64);
        let mut graph = ConflictGraph { items, words, bits: vec![0; items * words] };
        let mut pairs = 0usize;
        for g in 0..c.groups() {
            let members = c.group_start[g]..c.group_start[g + 1];
            pairs += members.len() * members.len();
            if pairs > MAX_PAIRS {
                return None;
            }
            for i in members.clone() {
                for j in members.clone().filter(|&j| j != i) {
                    graph.set(i, j);
                }
            }
        }
        // Per row, its users by amount, largest first: an item conflicts with every item of a
        // prefix of that list (those that with it exceed the capacity).
        let mut users: Vec<Vec<(u64, u32)>> = vec![Vec::new(); c.rows()];
        for i in 0..items as u32 {
            for e in c.consumption(i) {
                users[c.cons_row[e] as usize].push((c.cons_amount[e], i));
            }
        }
        for (r, list) in users.iter_mut().enumerate() {
            list.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            let capacity = u128::from(c.capacity[r]);
            for (k, &(amount, i)) in list.iter().enumerate() {
                for &(other, j) in &list[..k] {
                    if u128::from(amount) + u128::from(other) <= capacity {
                        break;
                    }
                    pairs += 1;
                    if pairs > MAX_PAIRS {
                        return None;
                    }
                    graph.set(i, j);
                    graph.set(j, i);
                }
            }
        }
        Some(graph)
    }

    fn set(&mut self, i: u32, j: u32) {
        let (i, j) = (i as usize, j as usize);
        self.bits[i * self.words + j / 64] |= 1 << (j % 64);
    }

    #[cfg(test)]
    fn conflict(&self, i: u32, j: u32) -> bool {
        let (i, j) = (i as usize, j as usize);
        self.bits[i * self.words + j / 64] & (1 << (j % 64)) != 0
    }

    fn neighbours(&self, i: u32) -> &[u64] {
        &self.bits[i as usize * self.words..(i as usize + 1) * self.words]
    }

    /// Up to `max_cuts` cliques whose sum of `x` (the LP value of each item) exceeds 1 by at least
    /// [`MIN_VIOLATION`], most violated first, each lifted to a maximal clique and sorted.
    pub fn violated_cliques(&self, x: &[f64], max_cuts: usize) -> Vec<Vec<u32>> {
        let mut used: Vec<u32> = (0..self.items as u32).filter(|&i| x[i as usize] > USED).collect();
        used.sort_by(|&a, &b| x[b as usize].total_cmp(&x[a as usize]).then(a.cmp(&b)));
        let mut found: Vec<(f64, Vec<u32>)> = Vec::new();
        let mut seen: HashSet<Vec<u32>> = HashSet::new();
        let mut candidates = vec![0u64; self.words];
        for &seed in &used {
            // Grow from the seed through the used items, most used first: each one added must
            // conflict with every member so far, which `candidates` tracks.
            candidates.copy_from_slice(self.neighbours(seed));
            let mut clique = vec![seed];
            let mut sum = x[seed as usize];
            for &i in &used {
                if candidates[i as usize / 64] & (1 << (i % 64)) != 0 {
                    clique.push(i);
                    sum += x[i as usize];
                    and_assign(&mut candidates, self.neighbours(i));
                }
            }
            if sum < 1.0 + MIN_VIOLATION {
                continue;
            }
            // Lift: every remaining candidate conflicts with the whole clique; adding them one by
            // one (lowest number first) keeps it a clique.
            for i in 0..self.items as u32 {
                if candidates[i as usize / 64] & (1 << (i % 64)) != 0 {
                    clique.push(i);
                    and_assign(&mut candidates, self.neighbours(i));
                }
            }
            clique.sort_unstable();
            if seen.insert(clique.clone()) {
                found.push((sum, clique));
            }
        }
        found.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        found.into_iter().take(max_cuts).map(|(_, clique)| clique).collect()
    }
}

fn and_assign(into: &mut [u64], other: &[u64]) {
    for (a, &b) in into.iter_mut().zip(other) {
        *a &= b;
    }
}

/// Rounds of clique cuts on `lp`, the solved root LP of `c`: returns the cuts it added as rows
/// (each a sorted list of compiled items), which the problem must then carry as rows too
/// ([`Compiled::with_cut_rows`]). The LP is left at the optimum of the last round, or wherever
/// the deadline stopped its dual simplex (still dual feasible, which is all a node's re-solve
/// needs).
pub(crate) fn strengthen_root(c: &Compiled, lp: &mut NodeLp, deadline: Option<Instant>) -> Vec<Vec<u32>> {
    let Some(graph) = ConflictGraph::new(c) else {
        return Vec::new();
    };
    let mut cuts = Vec::new();
    let mut x = vec![0.0; c.items()];
    let mut value = lp.value();
    for _ in 0..MAX_ROUNDS {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        for (i, xi) in x.iter_mut().enumerate() {
            *xi = lp.item_value(i as u32);
        }
        let room = MAX_ROWS.saturating_sub(lp.rows()).min(CUTS_PER_ROUND);
        let found = graph.violated_cliques(&x, room);
        if found.is_empty() {
            break;
        }
        lp.add_cut_rows(&found);
        cuts.extend(found);
        if lp.dual(u64::MAX, deadline) != LpStatus::Optimal {
            break;
        }
        let mut binding = lp.drop_slack_cut_rows().into_iter();
        cuts.retain(|_| binding.next() == Some(true));
        let next = lp.value();
        let fell = value - next;
        value = next;
        if fell < TAILING_OFF * value.abs().max(1.0) {
            break;
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clearing::lp::tests::Rng;
    use crate::clearing::node_lp::tests::{certify, set_packing};
    use crate::clearing::node_lp::ItemBound;
    use crate::clearing::problem::Problem;

    fn triangle() -> Problem {
        // Three bids on goods {0,1}, {1,2}, {0,2}, worth 2 each: the LP takes each at one half.
        let mut p = Problem::new(vec![1, 1, 1]);
        for (a, b) in [(0, 1), (1, 2), (0, 2)] {
            let g = p.add_group();
            p.add_item(g, 2.0, [(a, 1), (b, 1)]).unwrap();
        }
        p
    }

    #[test]
    fn items_conflict_in_a_group_or_over_a_row() {
        let mut p = Problem::new(vec![10, 1]);
        let g = p.add_group();
        let a = p.add_item(g, 5.0, [(0, 6)]).unwrap();
        let b = p.add_item(g, 4.0, [(1, 1)]).unwrap();
        let h = p.add_group();
        let c6 = p.add_item(h, 3.0, [(0, 5)]).unwrap();
        let k = p.add_group();
        let c4 = p.add_item(k, 3.0, [(0, 4)]).unwrap();
        let c = Compiled::new(&p);
        let graph = ConflictGraph::new(&c).unwrap();
        let at = |orig: usize| c.item_original.iter().position(|&o| o == orig).unwrap() as u32;
        // One group.
        assert!(graph.conflict(at(a), at(b)));
        // 6 + 5 > 10, but 6 + 4 and 5 + 4 fit.
        assert!(graph.conflict(at(a), at(c6)) && graph.conflict(at(c6), at(a)));
        assert!(!graph.conflict(at(a), at(c4)));
        assert!(!graph.conflict(at(c6), at(c4)));
        assert!(!graph.conflict(at(b), at(c6)));
    }

    #[test]
    fn the_triangle_is_cut_to_its_integer_optimum() {
        let p = triangle();
        let c = Compiled::new(&p);
        let mut lp = NodeLp::new(&c, &c.capacity, &vec![true; c.groups()]).unwrap();
        assert_eq!(lp.primal(None), LpStatus::Optimal);
        assert!((lp.value() - 3.0).abs() < 1e-5);
        let cuts = strengthen_root(&c, &mut lp, None);
        assert_eq!(cuts, vec![vec![0, 1, 2]]);
        let strengthened = c.with_cut_rows(&cuts);
        let value = certify(&strengthened, &lp, &vec![ItemBound::Free; c.items()]);
        assert!((value - 2.0).abs() < 1e-5, "{value}");
    }

    #[test]
    fn a_violated_clique_is_lifted_with_unused_items() {
        // The triangle plus a fourth bid on goods {0,1,2}: it conflicts with all three but is
        // worth too little for the LP to use, so only lifting puts it in the cut.
        let mut p = triangle();
        let g = p.add_group();
        p.add_item(g, 0.5, [(0, 1), (1, 1), (2, 1)]).unwrap();
        let c = Compiled::new(&p);
        let graph = ConflictGraph::new(&c).unwrap();
        let x = [0.5, 0.5, 0.5, 0.0];
        assert_eq!(graph.violated_cliques(&x, 10), vec![vec![0, 1, 2, 3]]);
        // Not violated enough: no cut.
        assert!(graph.violated_cliques(&[0.335, 0.335, 0.335, 0.0], 10).is_empty());
    }

    #[test]
    fn strengthened_random_lps_stay_valid_and_no_looser() {
        let mut rng = Rng(4242);
        let mut cut_any = false;
        for _ in 0..40 {
            let p = set_packing(&mut rng);
            let c = Compiled::new(&p);
            let mut lp = NodeLp::new(&c, &c.capacity, &vec![true; c.groups()]).unwrap();
            assert_eq!(lp.primal(None), LpStatus::Optimal);
            let bounds = vec![ItemBound::Free; c.items()];
            let root = certify(&c, &lp, &bounds);
            let cuts = strengthen_root(&c, &mut lp, None);
            let graph = ConflictGraph::new(&c).unwrap();
            for cut in &cuts {
                for (k, &i) in cut.iter().enumerate() {
                    assert!(cut[..k].iter().all(|&j| graph.conflict(i, j)), "not a clique: {cut:?}");
                }
            }
            cut_any |= !cuts.is_empty();
            // Certified against the problem with the cuts as rows: optimal there, and no higher
            // than without them.
            let strengthened = c.with_cut_rows(&cuts);
            let value = certify(&strengthened, &lp, &bounds);
            assert!(value <= root + 1e-6 * root.abs().max(1.0));
        }
        assert!(cut_any, "no instance had a violated clique: the test proves nothing");
    }
}
