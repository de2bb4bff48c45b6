//! The LP relaxation that the search re-solves at the nodes near the root of a problem with many
//! rows.
//!
//! Why: the Lagrangian search ([`super::solver`]) prices the rows with multipliers, and
//! subgradient steps alone stall well above the LP bound on large set-packing instances (CATS
//! `matching` and `paths`, whose LP bounds are within 0.03 % and 0.6 % of the optimum, took
//! 7–51 s of search). The LP's row duals *are* the best multipliers (the group sub-problem the
//! Lagrangian keeps has integral vertices), so solving the LP exactly at a node gives the search
//! the LP bound there, and the LP's point tells it where to branch and how to round.
//!
//! The method: the rows of the problem plus one convexity row per group of several items; items
//! are columns bounded by 0 and 1 (a branch fixes one at 0 or at 1), row slacks are bounded
//! below by 0. The root is solved by a bounded primal simplex from the all-slack basis, which is
//! feasible; every later node changes some items' bounds and is re-solved by the dual simplex
//! from the basis the last node ended with, which stays dual feasible, so a node costs a few
//! pivots. The basis inverse is kept explicitly (column-major, updated by one elimination per
//! pivot, skipping the columns the pivot row does not touch) because the rows number in the
//! hundreds and the columns are sparse; it is recomputed from scratch now and then to stop
//! rounding errors from accumulating. Set packing is massively degenerate (every right-hand
//! side is 1), so the right-hand sides are perturbed by a few parts in 10⁷ to keep Dantzig's
//! rule from stalling.
//!
//! Nothing here has to be exact for the search to stay correct: the duals only become
//! multipliers, and the Lagrangian bound is an upper bound for *any* multipliers `λ ≥ 0`. A
//! drifting inverse or an iteration limit can only make a bound weaker, never wrong.

use std::time::Instant;

use super::compiled::Compiled;

/// Smallest pivot element the ratio tests accept.
const PIVOT_TOL: f64 = 1e-9;
/// How far a basic value may stray outside its bounds and still count as within them.
const PRIMAL_TOL: f64 = 1e-9;
/// Relative size of the right-hand sides' perturbation.
const PERTURBATION: f64 = 1e-7;
/// Pivots between recomputing the duals and the basic values from the inverse, which bounds the
/// drift of their incremental updates.
const REFRESH_EVERY: u64 = 64;
/// Pivots between recomputing the inverse itself from the basic columns.
const REINVERT_EVERY: u64 = 2048;
/// No column.
const NONE: u32 = u32::MAX;
/// The most rows (capacity rows plus groups of several items) an LP is built for: its inverse
/// is `rows²` numbers, 18 MB here and a pivot up to 2 M multiply-adds. CATS instances of 256
/// goods have 300–750; a round whose quotas join many hosts can have tens of thousands (4 rows
/// and 40 groups per host), and the search then prices its rows by subgradient steps alone.
pub(crate) const MAX_ROWS: usize = 1500;

/// How a solve ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LpStatus {
    Optimal,
    /// No point satisfies the bounds: the node holds no selection at all.
    Infeasible,
    /// The deadline or the iteration limit; the duals are whatever was reached.
    Stopped,
}

/// Where a branch puts an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemBound {
    /// Between 0 and 1.
    Free,
    /// Fixed at 0 (excluded, or no longer fitting).
    Zero,
    /// Fixed at 1 (taken).
    One,
}

#[derive(Clone)]
pub(crate) struct NodeLp {
    /// Rows: the problem's capacity rows, then one convexity row per group of several items.
    m: usize,
    /// The problem's capacity rows (the first of the `m`).
    capacity_rows: usize,
    /// The first cut row ([`Self::add_cut_rows`]): the cuts are the last `m - cut_rows_start`
    /// rows, after the groups' rows.
    cut_rows_start: usize,
    /// The state of the right-hand sides' pseudo-random perturbation, which the cut rows go on
    /// drawing from.
    perturbation_state: u64,
    /// Structural columns (the open groups' items), sparse: entries `start[j]..start[j + 1]`.
    n: usize,
    start: Vec<u32>,
    row: Vec<u32>,
    coef: Vec<f64>,
    cost: Vec<f64>,
    /// The compiled item of each column, and the column of each compiled item (or [`NONE`]).
    item: Vec<u32>,
    column_of: Vec<u32>,
    /// Bounds of the columns, each 0 or 1.
    lower: Vec<f64>,
    upper: Vec<f64>,
    /// Right-hand sides, perturbed.
    rhs: Vec<f64>,
    /// Basis inverse, column-major: `binv[c * m + i]` is row `i`, column `c`.
    binv: Vec<f64>,
    /// Variable at each basis position: columns `0..n`, row slacks `n..n + m`.
    basis: Vec<u32>,
    /// Basis position of each variable, or [`NONE`] when nonbasic.
    position: Vec<u32>,
    /// Nonbasic columns resting at their upper bound (the others rest at their lower bound).
    at_upper: Vec<bool>,
    /// Values of the basic variables, by position.
    xb: Vec<f64>,
    /// Row duals.
    y: Vec<f64>,
    dual_tol: f64,
    /// Pivots over the lifetime of this LP (for the refresh schedule and the iteration limits).
    pivots: u64,
    alpha: Vec<f64>,
    rho: Vec<f64>,
    /// Whether the dual simplex prices its leaving row by dual steepest edge.
    steepest_edge: bool,
    /// With `steepest_edge`, the squared length of each row of the basis inverse, kept up to
    /// date by every pivot; empty until first needed and after each refresh.
    edge_weights: Vec<f64>,
    /// Scratch for `pivot`: each row's product with the pivot row.
    tau: Vec<f64>,
    /// The basic variables outside their bounds: (position, by how much, the bound).
    outside: Vec<(u32, f64, f64)>,
}

impl NodeLp {
    /// The LP of the items in open groups (`group_open`) over the rows' residual capacity
    /// `residual`, every item free, at the all-slack basis; `None` when it would have more than
    /// [`MAX_ROWS`] rows.
    pub fn new(c: &Compiled, residual: &[u64], group_open: &[bool]) -> Option<Self> {
        let rows = c.rows();
        let mut group_row = vec![NONE; c.groups()];
        let mut m = rows;
        for (g, row) in group_row.iter_mut().enumerate() {
            if group_open[g] && c.group_start[g + 1] - c.group_start[g] > 1 {
                *row = m as u32;
                m += 1;
            }
        }
        if m > MAX_ROWS {
            return None;
        }
        let (mut start, mut row, mut coef, mut cost, mut item) =
            (vec![0u32], Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut column_of = vec![NONE; c.items()];
        for i in 0..c.items() {
            let g = c.item_group[i] as usize;
            if !group_open[g] {
                continue;
            }
            for e in c.consumption(i as u32) {
                row.push(c.cons_row[e]);
                coef.push(c.cons_fraction[e]);
            }
            if group_row[g] != NONE {
                row.push(group_row[g]);
                coef.push(1.0);
            }
            start.push(row.len() as u32);
            column_of[i] = cost.len() as u32;
            cost.push(c.value[i]);
            item.push(i as u32);
        }
        let n = cost.len();
        // A fixed pseudo-random perturbation (the search must be deterministic).
        let mut perturbation_state = 0x9e37_79b9_7f4a_7c15u64;
        let rhs: Vec<f64> = (0..m)
            .map(|r| {
                let base = if r < rows { residual[r] as f64 * c.inv_capacity[r] } else { 1.0 };
                base + perturbation(&mut perturbation_state)
            })
            .collect();
        let mut binv = vec![0.0; m * m];
        for r in 0..m {
            binv[r * m + r] = 1.0;
        }
        let max_value = cost.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
        Some(NodeLp {
            m,
            capacity_rows: rows,
            cut_rows_start: m,
            perturbation_state,
            n,
            start,
            row,
            coef,
            cost,
            item,
            column_of,
            lower: vec![0.0; n],
            upper: vec![1.0; n],
            xb: rhs.clone(),
            rhs,
            binv,
            basis: (n..n + m).map(|v| v as u32).collect(),
            position: (0..n + m).map(|v| if v >= n { (v - n) as u32 } else { NONE }).collect(),
            at_upper: vec![false; n],
            y: vec![0.0; m],
            dual_tol: 1e-9 * max_value.max(1e-300),
            pivots: 0,
            alpha: vec![0.0; m],
            rho: vec![0.0; m],
            steepest_edge: false,
            edge_weights: Vec::new(),
            tau: Vec::new(),
            outside: Vec::new(),
        })
    }

    /// The duals of the problem's rows, at least 0: the Lagrangian's multipliers. Those are the
    /// capacity rows, then the cut rows, in the order the compiled problem with the cuts as rows
    /// ([`Compiled::with_cut_rows`]) has them; the groups' rows are the Lagrangian's own.
    pub fn row_duals(&self, lambda: &mut [f64]) {
        let rows = self.y[..self.capacity_rows].iter().chain(&self.y[self.cut_rows_start..]);
        for (l, &y) in lambda.iter_mut().zip(rows) {
            *l = y.max(0.0);
        }
    }

    /// Makes the dual simplex choose its leaving row by dual steepest edge: the primal
    /// infeasibility over the length of the basis inverse's row (exact: computed once from the
    /// explicit inverse, then updated by each pivot in the pass that updates the inverse, and
    /// recomputed at each refresh). Where a re-solve takes hundreds
    /// of pivots (nodes far from the last one, on CATS `regions_g256`) that cut their number 2.4
    /// fold; where it takes a few (the depth-first search's near-root nodes) it only costs.
    pub fn use_steepest_edge(&mut self) {
        self.steepest_edge = true;
    }

    /// Every row's squared length, from the inverse itself: one pass over it. After that each
    /// pivot updates them (`pivot`), until a refresh recomputes the inverse.
    fn exact_edge_weights(&mut self) {
        let m = self.m;
        self.edge_weights.clear();
        self.edge_weights.resize(m, 0.0);
        for c in 0..m {
            for (w, b) in self.edge_weights.iter_mut().zip(&self.binv[c * m..(c + 1) * m]) {
                *w += b * b;
            }
        }
        for w in &mut self.edge_weights {
            *w = w.max(1e-12);
        }
    }

    /// Rows: capacity rows, groups' rows and cuts.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// The objective at the current basis (the LP bound, once optimal).
    pub fn value(&self) -> f64 {
        (0..self.n).map(|j| self.cost[j] * self.x(j)).sum()
    }

    /// Adds a row `Σ x_i ≤ 1` over the compiled items of each cut, with its slack basic. The
    /// inverse of the grown basis `[[B, 0], [A, I]]` (`A`: the cuts over the basic columns) is
    /// `[[B⁻¹, 0], [−A·B⁻¹, I]]`, so nothing is refactored; the duals are unchanged (the new
    /// slacks cost nothing), so the basis stays dual feasible and [`Self::dual`] re-solves from it.
    /// A violated cut leaves its slack negative, which is exactly what the dual simplex repairs.
    pub fn add_cut_rows(&mut self, cuts: &[Vec<u32>]) {
        let (m, n, added) = (self.m, self.n, cuts.len());
        if added == 0 {
            return;
        }
        let grown = m + added;
        // Each column gains a 1 in the rows of the cuts its item is in.
        let mut extra: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (t, cut) in cuts.iter().enumerate() {
            for &i in cut {
                if let Some(j) = self.column_of.get(i as usize).copied().filter(|&j| j != NONE) {
                    extra[j as usize].push((m + t) as u32);
                }
            }
        }
        let (mut start, mut row, mut coef) = (vec![0u32], Vec::new(), Vec::new());
        for (j, rows) in extra.iter().enumerate() {
            for (r, a) in self.column(j) {
                row.push(r as u32);
                coef.push(a);
            }
            row.extend_from_slice(rows);
            coef.extend(std::iter::repeat(1.0).take(rows.len()));
            start.push(row.len() as u32);
        }
        // −A·B⁻¹: cut t's row is minus the sum of B⁻¹'s rows at the basic positions of its
        // columns.
        let mut positions: Vec<Vec<usize>> = vec![Vec::new(); added];
        for (p, &v) in self.basis.iter().enumerate() {
            if (v as usize) < n {
                for &r in &extra[v as usize] {
                    positions[r as usize - m].push(p);
                }
            }
        }
        let mut binv = vec![0.0; grown * grown];
        for c in 0..m {
            let old = &self.binv[c * m..(c + 1) * m];
            let new = &mut binv[c * grown..(c + 1) * grown];
            new[..m].copy_from_slice(old);
            for (t, at) in positions.iter().enumerate() {
                new[m + t] = -at.iter().map(|&p| old[p]).sum::<f64>();
            }
        }
        for c in m..grown {
            binv[c * grown + c] = 1.0;
        }
        self.binv = binv;
        self.start = start;
        self.row = row;
        self.coef = coef;
        for _ in 0..added {
            self.rhs.push(1.0 + perturbation(&mut self.perturbation_state));
        }
        for t in 0..added {
            self.basis.push((n + m + t) as u32);
            self.position.push((m + t) as u32);
        }
        self.m = grown;
        self.y.resize(grown, 0.0);
        self.xb.resize(grown, 0.0);
        self.alpha.resize(grown, 0.0);
        self.rho.resize(grown, 0.0);
        // The new slacks' values (and, harmlessly, everything else) from the grown inverse.
        self.refresh();
    }

    /// The LP value of compiled item `i` at the current basis (0 for an item of a closed group).
    pub fn item_value(&self, i: u32) -> f64 {
        match self.column_of[i as usize] {
            NONE => 0.0,
            j => self.x(j as usize),
        }
    }

    /// The items the LP uses, most used first (of equal use, the more valuable first): an order
    /// in which greedily packing them rounds the LP's point to a selection.
    pub fn rounding_order(&self, order: &mut Vec<u32>) {
        let mut used: Vec<(f64, u32)> = (0..self.n)
            .filter_map(|j| {
                let x = self.x(j);
                (x > 1e-6).then_some((x, j as u32))
            })
            .collect();
        used.sort_by(|a, b| b.0.total_cmp(&a.0).then(self.cost[b.1 as usize].total_cmp(&self.cost[a.1 as usize])));
        order.clear();
        order.extend(used.into_iter().map(|(_, j)| self.item[j as usize]));
    }

    /// Puts compiled item `i` between the bounds `bound` says. A nonbasic column moves to the
    /// bound that keeps the basis dual feasible, and the basic values follow it; a basic column
    /// may end up outside its new bounds, which [`Self::dual`] then repairs.
    pub fn set_bound(&mut self, i: u32, bound: ItemBound) {
        let j = match self.column_of[i as usize] {
            NONE => return,
            j => j as usize,
        };
        let (lo, hi) = match bound {
            ItemBound::Free => (0.0, 1.0),
            ItemBound::Zero => (0.0, 0.0),
            ItemBound::One => (1.0, 1.0),
        };
        if self.lower[j] == lo && self.upper[j] == hi {
            return;
        }
        let before = self.x(j);
        self.lower[j] = lo;
        self.upper[j] = hi;
        if self.position[j] != NONE {
            return;
        }
        self.at_upper[j] = lo < hi && self.reduced_cost(j) > 0.0;
        let delta = self.x(j) - before;
        if delta != 0.0 {
            self.ftran(j);
            for (x, &a) in self.xb.iter_mut().zip(&self.alpha) {
                *x -= a * delta;
            }
        }
    }

    fn column(&self, j: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let range = self.start[j] as usize..self.start[j + 1] as usize;
        self.row[range.clone()].iter().map(|&r| r as usize).zip(self.coef[range].iter().copied())
    }

    fn reduced_cost(&self, v: usize) -> f64 {
        if v < self.n {
            self.cost[v] - self.column(v).map(|(r, a)| self.y[r] * a).sum::<f64>()
        } else {
            -self.y[v - self.n]
        }
    }

    /// The value of variable `v` (a column or a row slack) at the current basis.
    fn x(&self, v: usize) -> f64 {
        if self.position[v] != NONE {
            self.xb[self.position[v] as usize]
        } else if v >= self.n {
            0.0
        } else if self.at_upper[v] {
            self.upper[v]
        } else {
            self.lower[v]
        }
    }

    fn lower_of(&self, v: usize) -> f64 {
        if v < self.n {
            self.lower[v]
        } else {
            0.0
        }
    }

    fn upper_of(&self, v: usize) -> f64 {
        if v < self.n {
            self.upper[v]
        } else {
            f64::INFINITY
        }
    }

    /// `alpha = B⁻¹ · column(v)`.
    fn ftran(&mut self, v: usize) {
        let m = self.m;
        let mut alpha = std::mem::take(&mut self.alpha);
        if v < self.n {
            alpha.fill(0.0);
            for (r, a) in self.column(v) {
                for (x, &b) in alpha.iter_mut().zip(&self.binv[r * m..(r + 1) * m]) {
                    *x += a * b;
                }
            }
        } else {
            let k = v - self.n;
            alpha.copy_from_slice(&self.binv[k * m..(k + 1) * m]);
        }
        self.alpha = alpha;
    }

    /// Recomputes the duals `y = c_B B⁻¹` and the basic values `B⁻¹ (b − Σ_nonbasic a_j x_j)`.
    fn refresh(&mut self) {
        let m = self.m;
        // The steepest-edge weights are recomputed exactly from the fresh inverse when next used.
        self.edge_weights.clear();
        let mut b = self.rhs.clone();
        for j in 0..self.n {
            if self.position[j] == NONE {
                let x = self.x(j);
                if x != 0.0 {
                    for (r, a) in self.column(j) {
                        b[r] -= a * x;
                    }
                }
            }
        }
        for c in 0..m {
            let column = &self.binv[c * m..(c + 1) * m];
            self.y[c] = column
                .iter()
                .zip(&self.basis)
                .map(|(&x, &v)| if (v as usize) < self.n { x * self.cost[v as usize] } else { 0.0 })
                .sum();
        }
        self.xb.fill(0.0);
        for (c, &bc) in b.iter().enumerate() {
            if bc != 0.0 {
                for (x, &e) in self.xb.iter_mut().zip(&self.binv[c * m..(c + 1) * m]) {
                    *x += e * bc;
                }
            }
        }
    }

    /// Recomputes the inverse from the basic columns (Gauss–Jordan with partial pivoting), then
    /// the duals and values. Keeps the old inverse if the basis looks singular.
    fn reinvert(&mut self) {
        let m = self.m;
        // Row-major copy of B, and the identity beside it.
        let mut a = vec![0.0; m * m];
        for (p, &v) in self.basis.iter().enumerate() {
            let v = v as usize;
            if v < self.n {
                for (r, coef) in self.column(v) {
                    a[r * m + p] = coef;
                }
            } else {
                a[(v - self.n) * m + p] = 1.0;
            }
        }
        let mut inv = vec![0.0; m * m];
        for r in 0..m {
            inv[r * m + r] = 1.0;
        }
        for col in 0..m {
            let pivot_row = (col..m).max_by(|&x, &y| a[x * m + col].abs().total_cmp(&a[y * m + col].abs())).unwrap();
            let pivot = a[pivot_row * m + col];
            if pivot.abs() < 1e-12 {
                return;
            }
            if pivot_row != col {
                for k in 0..m {
                    a.swap(pivot_row * m + k, col * m + k);
                    inv.swap(pivot_row * m + k, col * m + k);
                }
            }
            let scale = 1.0 / pivot;
            for k in 0..m {
                a[col * m + k] *= scale;
                inv[col * m + k] *= scale;
            }
            for r in 0..m {
                let f = a[r * m + col];
                if r != col && f != 0.0 {
                    for k in 0..m {
                        a[r * m + k] -= f * a[col * m + k];
                        inv[r * m + k] -= f * inv[col * m + k];
                    }
                }
            }
        }
        // `inv` is row-major B⁻¹ (row i = basis position i); store it column-major.
        for i in 0..m {
            for c in 0..m {
                self.binv[c * m + i] = inv[i * m + c];
            }
        }
        self.refresh();
    }

    /// Drops the cut rows whose slack is basic (the cut does not bind at this basis: its dual is
    /// 0) and returns, for each cut row in the order they were added, whether it stayed. Cuts that
    /// do not bind only make every pivot dearer (the inverse is `rows²`). With the slack of row
    /// `r` basic at position `p`, the basis is `[[B', 0], [a, 1]]` up to ordering, whose inverse is
    /// `[[B'⁻¹, 0], [−a·B'⁻¹, 1]]`: the smaller basis's inverse is the old one without row `p` and
    /// column `r`, and the duals and values of everything else are unchanged.
    pub fn drop_slack_cut_rows(&mut self) -> Vec<bool> {
        let (m, n) = (self.m, self.n);
        let keep_row: Vec<bool> = (0..m).map(|r| r < self.cut_rows_start || self.position[n + r] == NONE).collect();
        let kept = keep_row[self.cut_rows_start..].to_vec();
        if kept.iter().all(|&k| k) {
            return kept;
        }
        let mut keep_position = vec![true; m];
        for r in (0..m).filter(|&r| !keep_row[r]) {
            keep_position[self.position[n + r] as usize] = false;
        }
        let renumber = |keep: &[bool]| {
            let mut next = 0u32;
            keep.iter()
                .map(|&k| {
                    next += u32::from(k);
                    if k { next - 1 } else { NONE }
                })
                .collect::<Vec<u32>>()
        };
        let (new_row, new_position) = (renumber(&keep_row), renumber(&keep_position));
        let shrunk = keep_row.iter().filter(|&&k| k).count();
        let mut binv = vec![0.0; shrunk * shrunk];
        for c in (0..m).filter(|&c| keep_row[c]) {
            let to = new_row[c] as usize * shrunk;
            for i in (0..m).filter(|&i| keep_position[i]) {
                binv[to + new_position[i] as usize] = self.binv[c * m + i];
            }
        }
        let (mut start, mut row, mut coef) = (vec![0u32], Vec::new(), Vec::new());
        for j in 0..n {
            for (r, a) in self.column(j).filter(|&(r, _)| keep_row[r]) {
                row.push(new_row[r]);
                coef.push(a);
            }
            start.push(row.len() as u32);
        }
        let basis: Vec<u32> = (0..m)
            .filter(|&p| keep_position[p])
            .map(|p| match self.basis[p] as usize {
                v if v < n => v as u32,
                v => n as u32 + new_row[v - n],
            })
            .collect();
        let mut position = vec![NONE; n + shrunk];
        for (p, &v) in basis.iter().enumerate() {
            position[v as usize] = p as u32;
        }
        let keep = |values: &[f64], mask: &[bool]| values.iter().zip(mask).filter(|(_, &k)| k).map(|(&v, _)| v).collect::<Vec<f64>>();
        self.rhs = keep(&self.rhs, &keep_row);
        self.y = keep(&self.y, &keep_row);
        self.xb = keep(&self.xb, &keep_position);
        (self.binv, self.start, self.row, self.coef, self.basis, self.position) = (binv, start, row, coef, basis, position);
        self.m = shrunk;
        self.alpha.truncate(shrunk);
        self.rho.truncate(shrunk);
        self.refresh();
        kept
    }

    /// Bookkeeping every pivot shares: the refresh schedule.
    fn after_pivot(&mut self) {
        self.pivots += 1;
        if self.pivots % REINVERT_EVERY == 0 {
            self.reinvert();
        } else if self.pivots % REFRESH_EVERY == 0 {
            self.refresh();
        }
    }

    /// Replaces the basic variable at position `p` by `q` (whose column is in `alpha`), updating
    /// the inverse and the duals (`d` is `q`'s reduced cost). Basic values are the caller's.
    fn pivot(&mut self, p: usize, q: usize, d: f64) {
        let m = self.m;
        let alpha_p = self.alpha[p];
        let ratio = d / alpha_p;
        let weighted = self.edge_weights.len() == m;
        if weighted {
            self.tau.clear();
            self.tau.resize(m, 0.0);
        }
        for c in 0..m {
            let t = self.binv[c * m + p];
            if t == 0.0 {
                continue;
            }
            self.y[c] += ratio * t;
            let scaled = t / alpha_p;
            let column = &mut self.binv[c * m..(c + 1) * m];
            if weighted {
                // The same pass accumulates each row's product with row p (old values), which
                // the steepest-edge weights need below.
                for ((x, &a), tau) in column.iter_mut().zip(&self.alpha).zip(self.tau.iter_mut()) {
                    *tau += *x * t;
                    *x -= a * scaled;
                }
            } else {
                for (x, &a) in column.iter_mut().zip(&self.alpha) {
                    *x -= a * scaled;
                }
            }
            column[p] = scaled;
        }
        if weighted {
            // Row i becomes r_i − (α_i / α_p) r_p and row p becomes r_p / α_p, so the squared
            // lengths follow exactly from the old ones and the products with r_p.
            let weight_p = self.tau[p];
            for (i, (w, (&a, &tau))) in self.edge_weights.iter_mut().zip(self.alpha.iter().zip(&self.tau)).enumerate() {
                if i != p && a != 0.0 {
                    let r = a / alpha_p;
                    *w = (*w - 2.0 * r * tau + r * r * weight_p).max(1e-12);
                }
            }
            self.edge_weights[p] = (weight_p / (alpha_p * alpha_p)).max(1e-12);
        }
        let left = self.basis[p] as usize;
        self.position[left] = NONE;
        self.position[q] = p as u32;
        self.basis[p] = q as u32;
    }

    /// Primal simplex (Dantzig's rule) from the current basis, which must be primal feasible (the
    /// all-slack basis of a fresh LP is).
    pub fn primal(&mut self, deadline: Option<Instant>) -> LpStatus {
        let m = self.m;
        let limit = self.pivots + 20 * (self.n + m) as u64 + 1000;
        while self.pivots < limit {
            // A pivot costs microseconds to milliseconds; reading the clock, nanoseconds.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return LpStatus::Stopped;
            }
            // Entering: the nonbasic variable whose move off its bound gains the most per unit,
            // and the direction of the move (+1 up from the lower bound, −1 down from the upper).
            let mut entering: Option<(usize, f64, f64)> = None;
            let mut best_gain = self.dual_tol;
            for j in 0..self.n {
                if self.position[j] != NONE || self.lower[j] == self.upper[j] {
                    continue;
                }
                let d = self.reduced_cost(j);
                let gain = if self.at_upper[j] { -d } else { d };
                if gain > best_gain {
                    best_gain = gain;
                    entering = Some((j, d, if self.at_upper[j] { -1.0 } else { 1.0 }));
                }
            }
            for k in 0..m {
                let v = self.n + k;
                if self.position[v] == NONE && -self.y[k] > best_gain {
                    best_gain = -self.y[k];
                    entering = Some((v, -self.y[k], 1.0));
                }
            }
            let Some((q, d, dir)) = entering else {
                return LpStatus::Optimal;
            };
            self.ftran(q);
            // Ratio test: basic values move by −dir·θ·alpha, each stopping at a bound. Of equal
            // steps, the largest pivot element (the most stable) wins.
            let mut step = self.upper_of(q) - self.lower_of(q);
            let mut leaving: Option<usize> = None;
            let mut pivot = 0.0f64;
            for i in 0..m {
                let a = dir * self.alpha[i];
                let v = self.basis[i] as usize;
                let t = if a > PIVOT_TOL {
                    (self.xb[i] - self.lower_of(v)).max(0.0) / a
                } else if a < -PIVOT_TOL {
                    let u = self.upper_of(v);
                    if u.is_infinite() {
                        continue;
                    }
                    (u - self.xb[i]).max(0.0) / -a
                } else {
                    continue;
                };
                if t < step - 1e-12 || (t <= step + 1e-12 && leaving.is_some() && a.abs() > pivot) {
                    step = t;
                    leaving = Some(i);
                    pivot = a.abs();
                }
            }
            if step.is_infinite() {
                return LpStatus::Stopped; // unbounded cannot happen with bounded items
            }
            for (x, &a) in self.xb.iter_mut().zip(&self.alpha) {
                *x -= dir * step * a;
            }
            let Some(p) = leaving else {
                // The entering column reaches its other bound first: a bound flip.
                self.at_upper[q] = !self.at_upper[q];
                continue;
            };
            let left = self.basis[p] as usize;
            if left < self.n {
                self.at_upper[left] = dir * self.alpha[p] < 0.0;
            }
            let entering_value = if dir > 0.0 { self.lower_of(q) + step } else { self.upper_of(q) - step };
            self.pivot(p, q, d);
            self.xb[p] = entering_value;
            self.after_pivot();
        }
        LpStatus::Stopped
    }

    /// Dual simplex from the current basis, which must be dual feasible (every basis the
    /// primal or dual simplex ended with is, whatever bounds [`Self::set_bound`] changed since).
    /// At most `max_pivots` pivots, and none after `deadline`.
    pub fn dual(&mut self, max_pivots: u64, deadline: Option<Instant>) -> LpStatus {
        let m = self.m;
        let limit = self.pivots.saturating_add(max_pivots);
        loop {
            // Leaving: the basic variable furthest outside its bounds, squared; with steepest
            // edge, over the squared length of its row of the basis inverse.
            self.outside.clear();
            for i in 0..m {
                let v = self.basis[i] as usize;
                let (lo, hi) = (self.lower_of(v), self.upper_of(v));
                let x = self.xb[i];
                if lo - x > PRIMAL_TOL {
                    self.outside.push((i as u32, lo - x, lo));
                } else if x - hi > PRIMAL_TOL {
                    self.outside.push((i as u32, x - hi, hi));
                }
            }
            if self.steepest_edge && self.edge_weights.len() != m {
                self.exact_edge_weights();
            }
            let mut leaving: Option<(usize, f64)> = None;
            let mut worst = 0.0;
            for &(i, outside, target) in &self.outside {
                let weight = if self.steepest_edge { self.edge_weights[i as usize] } else { 1.0 };
                if outside * outside > worst * weight {
                    worst = outside * outside / weight;
                    leaving = Some((i as usize, target));
                }
            }
            let Some((p, target)) = leaving else {
                return LpStatus::Optimal;
            };
            if self.pivots >= limit || deadline.is_some_and(|d| Instant::now() >= d) {
                return LpStatus::Stopped;
            }
            // The pivot row: row p of B⁻¹, then its product with every nonbasic column.
            for c in 0..m {
                self.rho[c] = self.binv[c * m + p];
            }
            let increase = self.xb[p] < target;
            // Entering: of the nonbasic variables whose move takes x_p towards its bound, the
            // one whose reduced cost reaches zero first (keeping every other dual feasible).
            let mut entering: Option<(usize, f64)> = None;
            let mut best_ratio = f64::INFINITY;
            let mut best_pivot = 0.0f64;
            let mut consider = |v: usize, alpha_p: f64, d: f64, at_upper: bool| {
                // x_p moves by −alpha_p per unit of v; v moves up from its lower bound or down
                // from its upper bound.
                let helps = if at_upper { alpha_p > PIVOT_TOL } else { alpha_p < -PIVOT_TOL } == increase;
                if !helps {
                    return;
                }
                let ratio = d.abs() / alpha_p.abs();
                if ratio < best_ratio - 1e-12 || (ratio <= best_ratio + 1e-12 && alpha_p.abs() > best_pivot) {
                    best_ratio = ratio;
                    best_pivot = alpha_p.abs();
                    entering = Some((v, d));
                }
            };
            for j in 0..self.n {
                if self.position[j] != NONE || self.lower[j] == self.upper[j] {
                    continue;
                }
                let mut alpha_p = 0.0;
                let mut dot_y = 0.0;
                for (r, a) in self.column(j) {
                    alpha_p += self.rho[r] * a;
                    dot_y += self.y[r] * a;
                }
                if alpha_p.abs() > PIVOT_TOL {
                    consider(j, alpha_p, self.cost[j] - dot_y, self.at_upper[j]);
                }
            }
            for k in 0..m {
                let v = self.n + k;
                if self.position[v] == NONE && self.rho[k].abs() > PIVOT_TOL {
                    consider(v, self.rho[k], -self.y[k], false);
                }
            }
            let Some((q, d)) = entering else {
                return LpStatus::Infeasible;
            };
            self.ftran(q);
            let delta = (self.xb[p] - target) / self.alpha[p];
            let entering_value = self.x(q) + delta;
            for (x, &a) in self.xb.iter_mut().zip(&self.alpha) {
                *x -= a * delta;
            }
            let left = self.basis[p] as usize;
            if left < self.n {
                self.at_upper[left] = target == self.upper[left] && self.upper[left] > self.lower[left];
            }
            self.pivot(p, q, d);
            self.xb[p] = entering_value;
            self.after_pivot();
        }
    }
}

/// The next of the right-hand sides' perturbations: between one and two [`PERTURBATION`]s, drawn
/// by a xorshift from `state`.
fn perturbation(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    PERTURBATION * (1.0 + (*state >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clearing::lp::tests::Rng;
    use crate::clearing::problem::Problem;

    /// The Lagrangian bound at `lambda` with items held by `bounds` (rows priced, groups kept):
    /// an upper bound on the LP with those bounds for any `lambda ≥ 0`.
    fn lagrangian_at(c: &Compiled, lambda: &[f64], bounds: &[ItemBound]) -> f64 {
        let mut total: f64 = lambda.iter().sum();
        for g in 0..c.groups() {
            let reduced = |i: u32| {
                let mut rv = c.value[i as usize];
                for e in c.consumption(i) {
                    rv -= lambda[c.cons_row[e] as usize] * c.cons_fraction[e];
                }
                rv
            };
            let items = c.group_start[g]..c.group_start[g + 1];
            total += match items.clone().find(|&i| bounds[i as usize] == ItemBound::One) {
                Some(i) => reduced(i),
                None => items.filter(|&i| bounds[i as usize] == ItemBound::Free).map(reduced).fold(0.0, f64::max),
            };
        }
        total
    }

    /// Checks the LP's current answer by duality: its point must lie within the items' bounds
    /// and the unperturbed rows, and the Lagrangian bound at its duals must meet that point's
    /// value (which proves both optimal). Returns the value.
    pub(crate) fn certify(c: &Compiled, lp: &NodeLp, bounds: &[ItemBound]) -> f64 {
        let mut used = vec![0.0; lp.m];
        let mut value = 0.0;
        for j in 0..lp.n {
            let x = lp.x(j);
            let (lo, hi) = match bounds[lp.item[j] as usize] {
                ItemBound::Free => (0.0, 1.0),
                ItemBound::Zero => (0.0, 0.0),
                ItemBound::One => (1.0, 1.0),
            };
            assert!(x >= lo - 1e-7 && x <= hi + 1e-7, "column {j} at {x}, bounds {lo}..{hi}");
            for (r, a) in lp.column(j) {
                used[r] += a * x;
            }
            value += lp.cost[j] * x;
        }
        for (r, &u) in used.iter().enumerate() {
            assert!(u <= 1.0 + 1e-5, "row {r} holds {u}");
        }
        let mut lambda = vec![0.0; c.rows()];
        lp.row_duals(&mut lambda);
        let bound = lagrangian_at(c, &lambda, bounds);
        let scale = value.abs().max(1.0);
        // The point may use the perturbation's room in the rows (parts in 10⁷ each), which is
        // worth that much more than any point of the unperturbed rows.
        assert!(bound >= value - 1e-5 * scale, "bound {bound} below the feasible point's {value}");
        assert!(bound - value <= 1e-5 * scale, "bound {bound} not met by the LP point {value}");
        value
    }

    fn root(p: &Problem) -> (Compiled, Vec<ItemBound>) {
        let c = Compiled::new(p);
        let bounds = vec![ItemBound::Free; c.items()];
        (c, bounds)
    }

    /// Seeded CATS-like instances: bidders with one to four XOR bids on one to five goods.
    pub(crate) fn set_packing(rng: &mut Rng) -> Problem {
        let goods = 8 + rng.below(40) as usize;
        let mut p = Problem::new(vec![1; goods]);
        for _ in 0..10 + rng.below(80) {
            let g = p.add_group();
            for _ in 0..1 + rng.below(4) {
                let mut bundle: Vec<usize> = (0..1 + rng.below(5)).map(|_| rng.below(goods as u64) as usize).collect();
                bundle.sort_unstable();
                bundle.dedup();
                let value = 1.0 + rng.below(1000) as f64 / 10.0;
                p.add_item(g, value, bundle.into_iter().map(|good| (good, 1))).unwrap();
            }
        }
        p
    }

    #[test]
    fn a_fractional_triangle_is_bounded_by_its_lp_value() {
        // Three bids on goods {0,1}, {1,2}, {0,2}, worth 2 each: any two conflict, so the integer
        // optimum is 2, and the LP takes each at one half for 3.
        let mut p = Problem::new(vec![1, 1, 1]);
        for (a, b) in [(0, 1), (1, 2), (0, 2)] {
            let g = p.add_group();
            p.add_item(g, 2.0, [(a, 1), (b, 1)]).unwrap();
        }
        let (c, bounds) = root(&p);
        let mut lp = NodeLp::new(&c, &c.capacity, &vec![true; c.groups()]).unwrap();
        assert_eq!(lp.primal(None), LpStatus::Optimal);
        assert!((certify(&c, &lp, &bounds) - 3.0).abs() < 1e-5);
        // Taking one bid leaves the other two out: the LP is then integral at 2.
        let mut bounds = bounds;
        bounds[0] = ItemBound::One;
        lp.set_bound(0, ItemBound::One);
        assert_eq!(lp.dual(1000, None), LpStatus::Optimal);
        assert!((certify(&c, &lp, &bounds) - 2.0).abs() < 1e-5);
    }

    #[test]
    fn random_set_packing_lps_are_solved_at_the_root_and_after_branching() {
        let mut rng = Rng(12345);
        for _ in 0..40 {
            let p = set_packing(&mut rng);
            let (c, mut bounds) = root(&p);
            let mut lp = NodeLp::new(&c, &c.capacity, &vec![true; c.groups()]).unwrap();
            assert_eq!(lp.primal(None), LpStatus::Optimal);
            let root_value = certify(&c, &lp, &bounds);
            // Branch as a search does: fix items of a feasible selection at 1 and others at 0,
            // re-solve, and free them again, several times over on the same LP.
            for _ in 0..6 {
                let mut order: Vec<u32> = (0..c.items() as u32).collect();
                for k in (1..order.len()).rev() {
                    order.swap(k, rng.below(k as u64 + 1) as usize);
                }
                let mut left = c.capacity.clone();
                let mut taken_groups = vec![false; c.groups()];
                for &i in &order {
                    let g = c.item_group[i as usize] as usize;
                    let fits = c.fits(i, &left) && !taken_groups[g];
                    bounds[i as usize] = match rng.below(4) {
                        0 if fits => {
                            for e in c.consumption(i) {
                                left[c.cons_row[e] as usize] -= c.cons_amount[e];
                            }
                            taken_groups[g] = true;
                            ItemBound::One
                        }
                        1 => ItemBound::Zero,
                        _ => ItemBound::Free,
                    };
                }
                for (i, &b) in bounds.iter().enumerate() {
                    lp.set_bound(i as u32, b);
                }
                assert_eq!(lp.dual(100_000, None), LpStatus::Optimal);
                assert!(certify(&c, &lp, &bounds) <= root_value + 1e-6 * root_value);
            }
            bounds.fill(ItemBound::Free);
            for i in 0..c.items() as u32 {
                lp.set_bound(i, ItemBound::Free);
            }
            assert_eq!(lp.dual(100_000, None), LpStatus::Optimal);
            assert!((certify(&c, &lp, &bounds) - root_value).abs() <= 1e-6 * root_value);
        }
    }

    #[test]
    fn steepest_edge_reaches_the_same_optimum_in_fewer_pivots() {
        let mut rng = Rng(99);
        let (mut plain_pivots, mut steepest_pivots) = (0, 0);
        for _ in 0..20 {
            let p = set_packing(&mut rng);
            let (c, mut bounds) = root(&p);
            let mut plain = NodeLp::new(&c, &c.capacity, &vec![true; c.groups()]).unwrap();
            assert_eq!(plain.primal(None), LpStatus::Optimal);
            let mut steepest = plain.clone();
            steepest.use_steepest_edge();
            // Move far from the root: every other item out.
            for i in (0..c.items() as u32).step_by(2) {
                bounds[i as usize] = ItemBound::Zero;
                plain.set_bound(i, ItemBound::Zero);
                steepest.set_bound(i, ItemBound::Zero);
            }
            let before = plain.pivots;
            assert_eq!(plain.dual(100_000, None), LpStatus::Optimal);
            assert_eq!(steepest.dual(100_000, None), LpStatus::Optimal);
            plain_pivots += plain.pivots - before;
            steepest_pivots += steepest.pivots - before;
            let (a, b) = (certify(&c, &plain, &bounds), certify(&c, &steepest, &bounds));
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} against {b}");
        }
        assert!(steepest_pivots < plain_pivots, "{steepest_pivots} pivots against {plain_pivots}");
    }

    #[test]
    fn conflicting_items_fixed_at_one_make_the_node_infeasible() {
        let mut p = Problem::new(vec![1, 1]);
        for _ in 0..2 {
            let g = p.add_group();
            p.add_item(g, 1.0, [(0, 1), (1, 1)]).unwrap();
        }
        let (c, _) = root(&p);
        let mut lp = NodeLp::new(&c, &c.capacity, &vec![true; c.groups()]).unwrap();
        assert_eq!(lp.primal(None), LpStatus::Optimal);
        lp.set_bound(0, ItemBound::One);
        lp.set_bound(1, ItemBound::One);
        assert_eq!(lp.dual(1000, None), LpStatus::Infeasible);
    }

    #[test]
    fn an_lp_too_large_for_its_inverse_is_not_built() {
        // One capacity row plus a group row for each of MAX_ROWS two-item groups.
        let mut p = Problem::new(vec![1000]);
        for _ in 0..MAX_ROWS {
            let g = p.add_group();
            p.add_item(g, 2.0, [(0, 10)]).unwrap();
            p.add_item(g, 1.0, [(0, 1)]).unwrap();
        }
        let (c, _) = root(&p);
        assert_eq!(c.groups(), MAX_ROWS);
        assert!(NodeLp::new(&c, &c.capacity, &vec![true; c.groups()]).is_none());
    }

    #[test]
    fn knapsack_rows_with_fractional_use_are_solved_to_optimality() {
        // Host-like rows: items use parts of a capacity, and a lone item is held at most 1 only
        // by its own bound.
        let mut rng = Rng(777);
        for _ in 0..20 {
            let rows = 13 + rng.below(6) as usize;
            let mut p = Problem::new(vec![1000; rows]);
            for _ in 0..5 + rng.below(30) {
                let g = p.add_group();
                for _ in 0..1 + rng.below(6) {
                    let use_: Vec<(usize, u64)> = (0..rows).map(|r| (r, rng.below(400))).collect();
                    p.add_item(g, 1.0 + rng.below(100) as f64, use_).unwrap();
                }
            }
            let (c, bounds) = root(&p);
            let mut lp = NodeLp::new(&c, &c.capacity, &vec![true; c.groups()]).unwrap();
            assert_eq!(lp.primal(None), LpStatus::Optimal);
            certify(&c, &lp, &bounds);
        }
    }
}
