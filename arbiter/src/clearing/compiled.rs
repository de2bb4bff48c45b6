//! Pre-processing: the dense, pruned form of a [`Problem`] that the search works on.
//!
//! Bidders routinely submit options that can never be part of a best allocation: zero-value
//! bundles, bundles that alone exceed a capacity, and bundles dominated by a sibling in the same
//! XOR bid (no more value for at least as much of every resource). Removing them here shrinks the
//! tree the branch-and-bound explores. Rows that no choice can ever overfill (a resource nobody is
//! short of) are dropped too, which is common on hosts where only one or two resources are tight.
//! The result is laid out in flat arrays, items sorted by group, so the inner loops of the bound
//! stay in cache.

use super::problem::Problem;

/// Marker for "no item" in `u32` item slots.
pub(crate) const NO_ITEM: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    /// Capacity of each kept row.
    pub capacity: Vec<u64>,
    /// 1 / capacity, to measure consumption as a fraction of the row.
    pub inv_capacity: Vec<f64>,
    /// Items of compiled group `g` are `group_start[g]..group_start[g + 1]`, most valuable first
    /// (of equal values, the first added first), so that a search for a better option in a group
    /// can stop at the first that fits.
    pub group_start: Vec<u32>,
    /// The caller's group number of each compiled group.
    pub group_original: Vec<usize>,
    /// The compiled group of each original group, if it kept any item.
    pub group_compiled: Vec<Option<u32>>,
    pub item_original: Vec<usize>,
    pub item_group: Vec<u32>,
    pub value: Vec<f64>,
    /// Consumption of item `i` is entries `cons_start[i]..cons_start[i + 1]`.
    pub cons_start: Vec<u32>,
    pub cons_row: Vec<u32>,
    pub cons_amount: Vec<u64>,
    /// `cons_amount / capacity` of the row.
    pub cons_fraction: Vec<f64>,
    /// With few rows (at most [`DENSE_ROWS`]), every item's consumption of every row, zeros
    /// included: `dense[i * rows + r]`; otherwise empty. [`Compiled::fits`] is the innermost
    /// test of the few-row search's heuristics, and a dense row of four needs no indirection.
    pub dense: Vec<u64>,
    /// Every value is a whole multiple of this step (1, 0.1, 0.01 or 0.001; 0 when none of
    /// them fits), so a better selection is better by at least the step.
    pub value_step: f64,
}

/// Problems with at most this many rows (every host's) also get [`Compiled::dense`].
const DENSE_ROWS: usize = 12;

/// The steps [`Compiled::value_step`] tries, coarsest first. Bids priced in whole credits or in
/// cents are common; the search then discards a subtree whose bound cannot beat the incumbent by
/// a whole step, which float rounding alone never allows.
const VALUE_STEPS: [f64; 4] = [1.0, 0.1, 0.01, 0.001];

/// The coarsest step of [`VALUE_STEPS`] that every value is a whole multiple of (to within float
/// rounding of a decimal written value), or 0.
fn value_step(values: &[f64]) -> f64 {
    VALUE_STEPS
        .into_iter()
        .find(|&step| {
            values.iter().all(|&v| {
                let units = v / step;
                // Whole numbers below 2^50 are exact in f64; beyond that no step is trusted.
                units.abs() < (1u64 << 50) as f64 && (units - units.round()).abs() <= 1e-6
            })
        })
        .unwrap_or(0.0)
}

impl Compiled {
    pub fn new(problem: &Problem) -> Self {
        let capacities = problem.capacities();
        let group_count = problem.group_count();
        let (item_group, item_value) = (problem.item_groups(), problem.item_values());

        // Items that could ever be worth choosing, grouped: a counting sort by group (in order
        // within each), so that no group needs a list of its own. This runs once per host per
        // round, so it walks the problem's flat arrays rather than item by item.
        let mut candidate = vec![false; item_value.len()];
        let mut group_end = vec![0u32; group_count + 1];
        for (i, is_candidate) in candidate.iter_mut().enumerate() {
            *is_candidate = item_value[i] > 0.0
                && problem.consumption_of(i).iter().all(|&(row, amount)| amount <= capacities[row]);
            group_end[item_group[i] + 1] += u32::from(*is_candidate);
        }
        for g in 0..group_count {
            group_end[g + 1] += group_end[g];
        }
        let mut members = vec![0u32; group_end[group_count] as usize];
        let mut next = group_end.clone();
        for (i, _) in candidate.iter().enumerate().filter(|&(_, &is_candidate)| is_candidate) {
            let slot = &mut next[item_group[i]];
            members[*slot as usize] = i as u32;
            *slot += 1;
        }
        // Dominated items out, each group's survivors sorted by value and moved up to follow the
        // previous group's. On the way, the most each group can take of each row: a row is
        // redundant when even the greediest choice in every group cannot overfill it.
        let mut scratch = Dominance::default();
        let mut worst_case = vec![0u128; capacities.len()];
        let mut kept = 0;
        for g in 0..group_count {
            let (start, end) = (group_end[g] as usize, group_end[g + 1] as usize);
            let survivors = scratch.undominated(&mut members[start..end], problem, &mut worst_case);
            members.copy_within(start..start + survivors, kept);
            group_end[g] = kept as u32;
            kept += survivors;
        }
        members.truncate(kept);
        group_end[group_count] = kept as u32;
        // From here the items of group `g` are `members[group_end[g]..group_end[g + 1]]`.

        let mut row_new = vec![u32::MAX; capacities.len()];
        let mut capacity = Vec::new();
        for (row, &cap) in capacities.iter().enumerate() {
            if worst_case[row] > u128::from(cap) {
                row_new[row] = capacity.len() as u32;
                capacity.push(cap);
            }
        }
        let inv_capacity = capacity.iter().map(|&c| 1.0 / c as f64).collect();

        // Sized for every item and entry up front: this runs once per host per round, and growing
        // a dozen arrays item by item was a visible part of it.
        let (item_count, entry_count) = (members.len(), problem.entry_count());
        let mut compiled = Compiled {
            inv_capacity,
            group_start: Vec::with_capacity(group_count + 1),
            group_original: Vec::with_capacity(group_count),
            group_compiled: vec![None; group_count],
            item_original: Vec::with_capacity(item_count),
            item_group: Vec::with_capacity(item_count),
            value: Vec::with_capacity(item_count),
            cons_start: Vec::with_capacity(item_count + 1),
            cons_row: Vec::with_capacity(entry_count),
            cons_amount: Vec::with_capacity(entry_count),
            cons_fraction: Vec::with_capacity(entry_count),
            value_step: 0.0,
            dense: if capacity.len() <= DENSE_ROWS { vec![0; item_count * capacity.len()] } else { Vec::new() },
            capacity,
        };
        let rows = compiled.capacity.len();
        // Converting a u64 to f64 takes several instructions; each row's capacity is converted once.
        let capacity_f64: Vec<f64> = compiled.capacity.iter().map(|&c| c as f64).collect();
        compiled.group_start.push(0);
        compiled.cons_start.push(0);
        for g in 0..group_count {
            let items = &members[group_end[g] as usize..group_end[g + 1] as usize];
            if items.is_empty() {
                continue;
            }
            let cg = compiled.group_original.len() as u32;
            compiled.group_compiled[g] = Some(cg);
            compiled.group_original.push(g);
            for &i in items {
                let i = i as usize;
                let k = compiled.item_original.len();
                compiled.item_original.push(i);
                compiled.item_group.push(cg);
                compiled.value.push(item_value[i]);
                for &(row, amount) in problem.consumption_of(i) {
                    let r = row_new[row];
                    if r != u32::MAX {
                        if !compiled.dense.is_empty() {
                            compiled.dense[k * rows + r as usize] = amount;
                        }
                        compiled.cons_row.push(r);
                        compiled.cons_amount.push(amount);
                        compiled.cons_fraction.push(amount as f64 / capacity_f64[r as usize]);
                    }
                }
                compiled.cons_start.push(compiled.cons_row.len() as u32);
            }
            compiled.group_start.push(compiled.item_original.len() as u32);
        }
        compiled.value_step = value_step(&compiled.value);
        compiled
    }

    /// Whether `bound` leaves room for a selection better than `value`: it is above it by more
    /// than float rounding and, when values are on a step, by a whole step less float rounding.
    pub fn leaves_room(&self, bound: f64, value: f64) -> bool {
        let scale = value.abs().max(1.0);
        if bound <= value + 1e-9 * scale {
            return false;
        }
        !(self.value_step > 0.0 && bound < value + self.value_step - 1e-7 * scale)
    }

    pub fn rows(&self) -> usize {
        self.capacity.len()
    }

    pub fn groups(&self) -> usize {
        self.group_original.len()
    }

    pub fn items(&self) -> usize {
        self.value.len()
    }

    /// Whether `item` fits in what is `left` of every row (exactly, in integers).
    #[inline(always)]
    pub fn fits(&self, item: u32, left: &[u64]) -> bool {
        let rows = self.capacity.len();
        if self.dense.is_empty() {
            return self.consumption(item).all(|e| self.cons_amount[e] <= left[self.cons_row[e] as usize]);
        }
        no_more(&self.dense[item as usize * rows..(item as usize + 1) * rows], left)
    }

    #[inline]
    pub fn consumption(&self, item: u32) -> std::ops::Range<usize> {
        self.cons_start[item as usize] as usize..self.cons_start[item as usize + 1] as usize
    }

    /// This problem with one more row per cut (a list of compiled items no allocation holds two
    /// of, see [`super::cliques`]): capacity 1, each member using 1. The items, groups and values
    /// are the same, so the same allocations are feasible; the rows let the Lagrangian bounds
    /// price the cuts like any other row.
    pub fn with_cut_rows(&self, cuts: &[Vec<u32>]) -> Compiled {
        let rows = self.rows();
        let mut cuts_of: Vec<Vec<u32>> = vec![Vec::new(); self.items()];
        for (t, cut) in cuts.iter().enumerate() {
            for &i in cut {
                cuts_of[i as usize].push((rows + t) as u32);
            }
        }
        let mut out = self.clone();
        out.capacity.extend(std::iter::repeat(1).take(cuts.len()));
        out.inv_capacity.extend(std::iter::repeat(1.0).take(cuts.len()));
        (out.cons_start, out.cons_row, out.cons_amount, out.cons_fraction) = (vec![0], Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.items() as u32 {
            for e in self.consumption(i) {
                out.cons_row.push(self.cons_row[e]);
                out.cons_amount.push(self.cons_amount[e]);
                out.cons_fraction.push(self.cons_fraction[e]);
            }
            for &r in &cuts_of[i as usize] {
                out.cons_row.push(r);
                out.cons_amount.push(1);
                out.cons_fraction.push(1.0);
            }
            out.cons_start.push(out.cons_row.len() as u32);
        }
        let all_rows = out.rows();
        out.dense = Vec::new();
        if all_rows <= DENSE_ROWS {
            out.dense = vec![0; self.items() * all_rows];
            for i in 0..self.items() as u32 {
                for e in out.consumption(i) {
                    out.dense[i as usize * all_rows + out.cons_row[e] as usize] = out.cons_amount[e];
                }
            }
        }
        out
    }
}

/// Scratch space of the dominance check, reused from group to group.
#[derive(Default)]
struct Dominance {
    /// The members' consumption as a dense `members x rows` matrix, in order of value.
    dense: Vec<u64>,
    /// (value, item) of each member, most valuable first.
    by_value: Vec<(f64, u32)>,
    dominated: Vec<bool>,
    /// The largest amount of each row among the survivors.
    largest: Vec<u64>,
}

impl Dominance {
    /// Moves to the front of `members` every item that no sibling dominates (is worth at least
    /// as much and uses no more of any row), most valuable first (of equal values, in their
    /// order), and returns how many there are; adds the most each row can take from them to
    /// `worst_case`. Of two identical items the first one added is kept.
    ///
    /// Sorting first means that only the items before an item (and its equals) can dominate it,
    /// and each comparison is a straight pass over two rows of the dense matrix.
    fn undominated(&mut self, members: &mut [u32], problem: &Problem, worst_case: &mut [u128]) -> usize {
        let rows = problem.capacities().len();
        self.by_value.clear();
        let values = problem.item_values();
        self.by_value.extend(members.iter().map(|&i| (values[i as usize], i)));
        // Stable: equal values keep the order they were added in.
        self.by_value.sort_by(|a, b| b.0.total_cmp(&a.0));
        let n = members.len();
        self.dominated.clear();
        self.dominated.resize(n, false);
        // Quadratic; XOR bids are small, and a huge one is kept whole rather than stall.
        if (2..=256).contains(&n) {
            self.dense.clear();
            self.dense.resize(n * rows, 0);
            for (k, &(_, i)) in self.by_value.iter().enumerate() {
                for &(row, amount) in problem.consumption_of(i as usize) {
                    self.dense[k * rows + row] = amount;
                }
            }
            let (dense, by_value) = (&self.dense, &self.by_value);
            let uses_no_more = |j: usize, k: usize| no_more(&dense[j * rows..(j + 1) * rows], &dense[k * rows..(k + 1) * rows]);
            let mut equal_end = 0;
            for k in 0..n {
                // Members `..equal_end` are worth at least as much as `k`.
                equal_end = equal_end.max(k + 1);
                while equal_end < n && by_value[equal_end].0 >= by_value[k].0 {
                    equal_end += 1;
                }
                // An earlier one that uses no more dominates `k`; a later one (of equal value)
                // only if `k` does not use exactly as much (then `k`, added first, is kept).
                self.dominated[k] =
                    (0..equal_end).any(|j| j != k && uses_no_more(j, k) && (j < k || !uses_no_more(k, j)));
            }
        }
        let mut kept = 0;
        for k in 0..n {
            if self.dominated[k] {
                continue;
            }
            members[kept] = self.by_value[k].1;
            kept += 1;
        }
        self.largest.clear();
        self.largest.resize(rows, 0);
        for &i in &members[..kept] {
            for &(row, amount) in problem.consumption_of(i as usize) {
                self.largest[row] = self.largest[row].max(amount);
            }
        }
        worst_case.iter_mut().zip(&self.largest).for_each(|(most, &largest)| *most += u128::from(largest));
        kept
    }
}

/// Whether `a` uses no more than `b` of every row; four rows (a host's) without a loop.
#[inline(always)]
fn no_more(a: &[u64], b: &[u64]) -> bool {
    if let (Ok(a), Ok(b)) = (<&[u64; 4]>::try_from(a), <&[u64; 4]>::try_from(b)) {
        return (a[0] <= b[0]) & (a[1] <= b[1]) & (a[2] <= b[2]) & (a[3] <= b[3]);
    }
    a.iter().zip(b).all(|(a, b)| a <= b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clearing::problem::Problem;

    #[test]
    fn the_value_step_is_the_coarsest_that_every_value_is_a_multiple_of() {
        assert_eq!(value_step(&[3.0, 5.0, 120.0]), 1.0);
        assert_eq!(value_step(&[1.5, 2.0]), 0.1);
        assert_eq!(value_step(&[1.5, 2.25, 403.19]), 0.01);
        assert_eq!(value_step(&[0.1 + 0.2]), 0.1, "float rounding of a decimal value is not a finer step");
        assert_eq!(value_step(&[1.0 / 3.0]), 0.0);
        assert_eq!(value_step(&[2.5, 1e300]), 0.0, "too large to trust any step");
    }

    #[test]
    fn dominated_and_worthless_options_go_and_the_rest_are_sorted_by_value() {
        let mut problem = Problem::new(vec![10, 10]);
        let g = problem.add_group();
        let small = problem.add_item(g, 2.0, [(0, 1)]).unwrap();
        problem.add_item(g, 1.0, [(0, 2)]).unwrap(); // dominated by `small`
        let large = problem.add_item(g, 5.0, [(0, 3), (1, 3)]).unwrap();
        let trade = problem.add_item(g, 2.0, [(1, 1)]).unwrap(); // as valuable as `small`, other row
        problem.add_item(g, 0.0, [(0, 1)]).unwrap(); // worth nothing
        problem.add_item(g, 9.0, [(0, 11)]).unwrap(); // never fits
        let c = Compiled::new(&problem);
        let kept: Vec<usize> = (0..c.items()).map(|i| c.item_original[i]).collect();
        assert_eq!(kept, [large, small, trade], "most valuable first; equal values in the order added");
        assert_eq!(c.group_start, [0, 3]);
    }

    #[test]
    fn of_equal_values_the_smaller_option_stays_and_of_identical_ones_the_first() {
        let mut problem = Problem::new(vec![10, 10]);
        let g = problem.add_group();
        let first = problem.add_item(g, 3.0, [(0, 2), (1, 2)]).unwrap();
        problem.add_item(g, 3.0, [(0, 2), (1, 2)]).unwrap(); // identical to `first`
        problem.add_item(g, 4.0, [(0, 5), (1, 1)]).unwrap(); // dominated by the next
        let smaller = problem.add_item(g, 4.0, [(0, 4), (1, 1)]).unwrap();
        let c = Compiled::new(&problem);
        let kept: Vec<usize> = (0..c.items()).map(|i| c.item_original[i]).collect();
        assert_eq!(kept, [smaller, first]);
    }

    #[test]
    fn fits_reads_the_dense_rows_of_few_row_problems_and_the_entries_of_others() {
        for rows in [3, 4, DENSE_ROWS + 1] {
            // Two groups that can overfill every row together, so that pre-processing keeps them.
            let mut problem = Problem::new(vec![5; rows]);
            for _ in 0..2 {
                let g = problem.add_group();
                for r in 0..rows {
                    problem.add_item(g, 1.0 + r as f64, [(r, 4), ((r + 1) % rows, 2)]).unwrap();
                }
            }
            let c = Compiled::new(&problem);
            assert_eq!((c.rows(), c.dense.is_empty()), (rows, rows > DENSE_ROWS));
            for i in 0..c.items() as u32 {
                let need: Vec<u64> = (0..rows)
                    .map(|r| c.consumption(i).find(|&e| c.cons_row[e] as usize == r).map_or(0, |e| c.cons_amount[e]))
                    .collect();
                for short in 0..rows {
                    let mut left = vec![5; rows];
                    assert!(c.fits(i, &left));
                    left[short] = need[short].saturating_sub(1);
                    assert_eq!(c.fits(i, &left), need[short] == 0, "item {i}, row {short} one short");
                    left[short] = need[short];
                    assert!(c.fits(i, &left), "exactly enough fits");
                }
            }
        }
    }

    #[test]
    fn a_bound_leaves_room_only_for_a_whole_step() {
        let mut problem = Problem::new(vec![10]);
        let g = problem.add_group();
        problem.add_item(g, 2.25, [(0, 4)]).unwrap();
        problem.add_item(g, 1.5, [(0, 2)]).unwrap();
        let c = Compiled::new(&problem);
        assert_eq!(c.value_step, 0.01);
        assert!(!c.leaves_room(100.005, 100.0), "no selection can be better by half a cent");
        assert!(c.leaves_room(100.01, 100.0));
        // Without a step only float rounding is discounted.
        let mut problem = Problem::new(vec![10]);
        let g = problem.add_group();
        problem.add_item(g, 1.0 / 3.0, [(0, 4)]).unwrap();
        let c = Compiled::new(&problem);
        assert_eq!(c.value_step, 0.0);
        assert!(c.leaves_room(100.005, 100.0));
        assert!(!c.leaves_room(100.0 + 1e-12, 100.0));
    }
}
