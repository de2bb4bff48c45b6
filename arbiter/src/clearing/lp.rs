//! The exact LP relaxation of a problem with few rows: a simplex method with generalised upper
//! bounds (GUB), whose working basis is only rows x rows.
//!
//! Why: on a host's round (tens of XOR groups over 4–6 capacity rows) the Lagrangian bound that
//! subgradient steps reach stays 0.2–0.8 % above the optimum and the search needs thousands of
//! nodes. The LP relaxation is the best that bound can ever be, and with so few rows it is cheap
//! to solve exactly: of the `rows + groups` basic variables, every group has one *key* variable
//! whose value follows from its convexity row (`Σ_group x = 1`, counting the group's "nothing"
//! slack), so only a `rows x rows` matrix of the other basic columns (each minus its group's key
//! column) is ever factorised. It is small enough to be refactorised from scratch at every
//! iteration, which keeps the code simple and the numbers fresh.
//!
//! Variables are numbered: items `0..n` (consumption as a fraction of each row's capacity, so
//! every right-hand side is 1), the row slacks `n..n + rows`, and one "nothing" slack per group
//! `n + rows..n + rows + groups`. Every variable is bounded below by 0; a variable that the
//! branch-and-bound has *disallowed* is also bounded above by 0. The primal simplex solves the
//! root from the vertex of a feasible selection (the caller's greedy one; the all-slack basis of
//! the empty selection also works), with partial pricing: after a full pass over the items it
//! prices only the few that pass found best, while one of them can still enter; the dual simplex
//! re-optimises a child from its parent's optimal basis (disallowing a variable keeps a basis
//! dual feasible, so a child needs only a few pivots).
//!
//! The caller never trusts the LP for correctness: it turns the duals into the Lagrangian bound
//! `L(λ)` (see [`super::bounds`]), which is an upper bound for *any* `λ ≥ 0`, so a numerically
//! imperfect LP can only make the bound weaker, never wrong.

use super::compiled::Compiled;

/// The LP is used when the problem has at most this many rows (after pre-processing).
pub(crate) const MAX_LP_ROWS: usize = 12;

/// Items a full pricing pass keeps for the iterations after it (see [`Lp::primal_entering`]).
const SHORTLIST: usize = 8;

/// Marker for "no group" (row slacks belong to none).
const NO_GROUP: u32 = u32::MAX;

/// Primal feasibility tolerance (values are fractions of one, rows fractions of capacity).
const PRIMAL_TOL: f64 = 1e-9;
/// Smallest pivot element the ratio tests accept.
const PIVOT_TOL: f64 = 1e-9;

/// How a solve ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LpStatus {
    Optimal,
    /// No selection satisfies the bounds (a node of the search with nothing left).
    Infeasible,
    /// Iteration limit or a singular working basis; the duals are whatever was reached.
    Failed,
}

/// A GUB basis: the key variable of every group and the `rows` other basic variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Basis {
    pub key: Vec<u32>,
    pub nonkey: Vec<u32>,
}

/// The problem data in the dense form the simplex wants, plus its scratch space.
pub(crate) struct Lp<'a> {
    c: &'a Compiled,
    rows: usize,
    n: usize,
    /// Consumption of item `j` in row `r` as a fraction of capacity: `col[j * rows + r]`.
    col: Vec<f64>,
    /// Dual feasibility tolerance, relative to the largest value.
    dual_tol: f64,
    // Working basis, LU factorised in place (row-major), with its row permutation.
    lu: Vec<f64>,
    perm: Vec<usize>,
    /// Values of the non-key basic variables, by slot.
    pub x_nonkey: Vec<f64>,
    /// Values of the key variables, by group.
    pub x_key: Vec<f64>,
    /// Row duals (per unit of capacity).
    pub lambda: Vec<f64>,
    /// Group duals.
    pub mu: Vec<f64>,
    basic: Vec<bool>,
    marked: Vec<u32>,
    /// `Σ_g column(key g)`, the keys' use of each row: set by [`Self::mark_basic`] and kept up
    /// to date by [`Self::pivot`], so that a refresh need not add up every group's key.
    key_use: [f64; MAX_LP_ROWS],
    /// During a primal solve, each item's value where it may enter the basis and −∞ where it may
    /// not (disallowed or basic), so that pricing tests nothing per item.
    price: Vec<f64>,
    /// The [`SHORTLIST`] items of largest reduced cost in the last full pricing pass: the
    /// iterations after it price only these, while one of them can still enter. (Keeping only
    /// the pass's successive leaders needed a full pass at every other iteration on synthetic
    /// hosts; the best eight take a quarter fewer full passes.)
    shortlist: Vec<u32>,
    scratch_g: Vec<f64>,
    candidates: Vec<u32>,
    /// Simplex iterations over the lifetime of this LP (for diagnostics).
    pub iterations: u64,
}

impl<'a> Lp<'a> {
    pub fn new(c: &'a Compiled) -> Self {
        let rows = c.rows();
        let n = c.items();
        let mut col = vec![0.0; n * rows];
        for j in 0..n {
            for e in c.consumption(j as u32) {
                col[j * rows + c.cons_row[e] as usize] = c.cons_fraction[e];
            }
        }
        let max_value = c.value.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
        let vars = n + rows + c.groups();
        Lp {
            c,
            rows,
            n,
            col,
            dual_tol: 1e-10 * max_value.max(1e-300),
            lu: vec![0.0; rows * rows],
            perm: vec![0; rows],
            x_nonkey: vec![0.0; rows],
            x_key: vec![0.0; c.groups()],
            lambda: vec![0.0; rows],
            mu: vec![0.0; c.groups()],
            basic: vec![false; vars],
            // Every basic variable, and more as pivots add entering ones.
            marked: Vec::with_capacity(2 * (rows + c.groups())),
            key_use: [0.0; MAX_LP_ROWS],
            price: Vec::with_capacity(n),
            shortlist: Vec::new(),
            scratch_g: vec![0.0; c.groups()],
            candidates: Vec::with_capacity(vars),
            iterations: 0,
        }
    }

    /// The problem this LP relaxes.
    pub fn compiled(&self) -> &'a Compiled {
        self.c
    }

    /// Number of variables (items, row slacks, group slacks).
    pub fn vars(&self) -> usize {
        self.n + self.rows + self.c.groups()
    }

    /// The variable that is group `g`'s "nothing" slack.
    pub fn group_slack(&self, g: usize) -> u32 {
        (self.n + self.rows + g) as u32
    }

    /// The basis of the empty selection: every group's key its slack, every row's slack basic.
    pub fn slack_basis(&self) -> Basis {
        Basis {
            key: (0..self.c.groups()).map(|g| self.group_slack(g)).collect(),
            nonkey: (0..self.rows).map(|r| (self.n + r) as u32).collect(),
        }
    }

    #[inline]
    pub fn group_of(&self, v: u32) -> u32 {
        let v = v as usize;
        if v < self.n {
            self.c.item_group[v]
        } else if v < self.n + self.rows {
            NO_GROUP
        } else {
            (v - self.n - self.rows) as u32
        }
    }

    #[inline]
    fn value_of(&self, v: u32) -> f64 {
        if (v as usize) < self.n {
            self.c.value[v as usize]
        } else {
            0.0
        }
    }

    /// `out += scale * column(v)`.
    #[inline]
    fn add_column(&self, v: u32, scale: f64, out: &mut [f64]) {
        let v = v as usize;
        if v < self.n {
            let col = &self.col[v * self.rows..(v + 1) * self.rows];
            for r in 0..self.rows {
                out[r] += scale * col[r];
            }
        } else if v < self.n + self.rows {
            out[v - self.n] += scale;
        }
    }

    /// `y · column(v)`.
    #[inline]
    fn dot_column(&self, v: u32, y: &[f64]) -> f64 {
        let v = v as usize;
        if v < self.n {
            dot(&self.col[v * self.rows..(v + 1) * self.rows], &y[..self.rows])
        } else if v < self.n + self.rows {
            y[v - self.n]
        } else {
            0.0
        }
    }

    /// The reduced cost of variable `v` at the current duals (0 for basic variables).
    #[inline]
    pub fn reduced_cost(&self, v: u32) -> f64 {
        let g = self.group_of(v);
        let mu = if g == NO_GROUP { 0.0 } else { self.mu[g as usize] };
        self.value_of(v) - self.dot_column(v, &self.lambda) - mu
    }

    /// The value of basic or nonbasic variable `v` in the current basic solution.
    pub fn value(&self, basis: &Basis, v: u32) -> f64 {
        if !self.basic[v as usize] {
            return 0.0;
        }
        let g = self.group_of(v);
        if g != NO_GROUP && basis.key[g as usize] == v {
            return self.x_key[g as usize];
        }
        basis.nonkey.iter().position(|&s| s == v).map_or(0.0, |s| self.x_nonkey[s])
    }

    /// Marks the variables of `basis` basic (and no others): at the start of a solve, whose basis
    /// comes from elsewhere; [`Self::pivot`] keeps the marks from then on.
    fn mark_basic(&mut self, basis: &Basis) {
        for &v in &self.marked {
            self.basic[v as usize] = false;
        }
        self.marked.clear();
        for &v in basis.key.iter().chain(&basis.nonkey) {
            self.basic[v as usize] = true;
            self.marked.push(v);
        }
        let mut key_use = [0.0; MAX_LP_ROWS];
        for &k in &basis.key {
            self.add_column(k, 1.0, &mut key_use[..self.rows]);
        }
        self.key_use = key_use;
    }

    /// Factorises the working basis and computes primal values and duals. `false` if singular.
    /// Runs at every iteration, so its vectors of `rows` entries live on the stack.
    fn refresh(&mut self, basis: &Basis) -> bool {
        let m = self.rows;
        // W[r][s] = column(nonkey s) - column(key of its group).
        for (s, &v) in basis.nonkey.iter().enumerate() {
            let mut column = [0.0f64; MAX_LP_ROWS];
            self.add_column(v, 1.0, &mut column[..m]);
            let g = self.group_of(v);
            if g != NO_GROUP {
                self.add_column(basis.key[g as usize], -1.0, &mut column[..m]);
            }
            for (r, &x) in column[..m].iter().enumerate() {
                self.lu[r * m + s] = x;
            }
        }
        if !lu_factor(m, &mut self.lu, &mut self.perm) {
            return false;
        }
        // Primal: W x = 1 - Σ_g column(key g).
        let mut rhs = [1.0f64; MAX_LP_ROWS];
        rhs[..m].iter_mut().zip(&self.key_use[..m]).for_each(|(x, used)| *x -= used);
        lu_solve(m, &self.lu, &self.perm, &rhs[..m], &mut self.x_nonkey);
        self.x_key.fill(1.0);
        for (s, &v) in basis.nonkey.iter().enumerate() {
            let g = self.group_of(v);
            if g != NO_GROUP {
                self.x_key[g as usize] -= self.x_nonkey[s];
            }
        }
        // Duals: W^T λ = value(nonkey) - value(key of its group); μ_g = value(key) - λ·column(key).
        let mut cost = [0.0f64; MAX_LP_ROWS];
        for (s, &v) in basis.nonkey.iter().enumerate() {
            let g = self.group_of(v);
            cost[s] = self.value_of(v) - if g != NO_GROUP { self.value_of(basis.key[g as usize]) } else { 0.0 };
        }
        lu_solve_transposed(m, &self.lu, &self.perm, &cost[..m], &mut self.lambda);
        for (mu, &k) in self.mu.iter_mut().zip(&basis.key) {
            let k = k as usize;
            *mu = if k < self.n { self.c.value[k] - dot(&self.col[k * m..(k + 1) * m], &self.lambda) } else { 0.0 };
        }
        true
    }

    /// `W^{-1} (column(v) - column(key of v's group))` into `y`.
    fn ftran(&self, basis: &Basis, v: u32, y: &mut [f64]) {
        let m = self.rows;
        let mut column = [0.0f64; MAX_LP_ROWS];
        self.add_column(v, 1.0, &mut column[..m]);
        let g = self.group_of(v);
        if g != NO_GROUP {
            self.add_column(basis.key[g as usize], -1.0, &mut column[..m]);
        }
        lu_solve(m, &self.lu, &self.perm, &column[..m], y);
    }

    /// Replaces basic variable `leaving` by `entering`, choosing a new key when a key leaves;
    /// returns the variable that left the basis.
    fn pivot(&mut self, basis: &mut Basis, leaving: Leaving, entering: u32) -> u32 {
        let left = match leaving {
            Leaving::Slot(s) => std::mem::replace(&mut basis.nonkey[s], entering),
            Leaving::Key(h) => {
                let old_key = basis.key[h];
                if self.group_of(entering) == h as u32 {
                    basis.key[h] = entering;
                } else {
                    let s = (0..self.rows)
                        .find(|&s| self.group_of(basis.nonkey[s]) == h as u32)
                        .expect("a key can only leave through a basic sibling");
                    basis.key[h] = std::mem::replace(&mut basis.nonkey[s], entering);
                }
                let mut key_use = self.key_use;
                self.add_column(old_key, -1.0, &mut key_use[..self.rows]);
                self.add_column(basis.key[h], 1.0, &mut key_use[..self.rows]);
                self.key_use = key_use;
                old_key
            }
        };
        self.basic[left as usize] = false;
        self.basic[entering as usize] = true;
        // `marked` lists every variable that may be marked, for the next `mark_basic`.
        self.marked.push(entering);
        left
    }

    fn iteration_limit(&self) -> usize {
        50 * (self.rows + self.c.groups()) + 100
    }

    /// The basis whose keys are `chosen` (at most one item per group; the other groups' keys are
    /// their "nothing" slacks) and whose other basic variables are the row slacks: the vertex of
    /// that integral selection, primal feasible when the selection fits. A good selection is a
    /// far better start for [`Self::primal`] than the empty one, which needs a pivot for every
    /// group that the optimum gives anything.
    pub fn basis_of(&self, chosen: &[u32]) -> Basis {
        let mut basis = self.slack_basis();
        for &i in chosen {
            basis.key[self.c.item_group[i as usize] as usize] = i;
        }
        basis
    }

    /// The primal simplex's entering variable at the current duals: the shortlisted item of
    /// largest reduced cost above the tolerance, else the allowed nonbasic variable of largest
    /// reduced cost (Dantzig's rule), or with `bland` the first in index order (Bland's rule,
    /// which cannot cycle). `None` when the basis is optimal.
    ///
    /// Pricing is most of a primal iteration, so the items, nearly all the variables, are priced
    /// in one loop over the dense columns with no branch on the kind of variable.
    fn primal_entering(&mut self, allowed: &[bool], bland: bool) -> Option<u32> {
        let m = self.rows;
        // Partial pricing: the last full pass's shortlist first, a full pass when none of it can
        // enter. Only a full pass finds the basis optimal.
        if !bland {
            if let Some(j) = self.price_shortlist() {
                return Some(j);
            }
        }
        let mut best = self.dual_tol;
        let mut shortlist = std::mem::take(&mut self.shortlist);
        shortlist.clear();
        let mut entering = self.price_items(bland, &mut best, &mut shortlist);
        self.shortlist = shortlist;
        if bland && entering.is_some() {
            return entering;
        }
        // Row slacks (reduced cost −λ_r) and group slacks (−μ_g).
        for v in self.n..self.vars() {
            if self.basic[v] || !allowed[v] {
                continue;
            }
            let d = if v < self.n + m { -self.lambda[v - self.n] } else { -self.mu[v - self.n - m] };
            if d > best {
                entering = Some(v as u32);
                if bland {
                    return entering;
                }
                best = d;
            }
        }
        entering
    }

    /// The item of largest reduced cost above `best` (raising `best` to it), or with `bland` the
    /// first one, among those that [`Self::price`] lets enter; fills `shortlist` (not with
    /// `bland`). With four rows the columns are
    /// read as `[f64; 4]`, so the dot product unrolls and the loop has no bounds checks; that is
    /// most hosts.
    fn price_items(&self, bland: bool, best: &mut f64, shortlist: &mut Vec<u32>) -> Option<u32> {
        let m = self.rows;
        if m == 4 {
            let (columns, _) = self.col.as_chunks::<4>();
            self.price_columns(columns.iter().map(|column| column.as_slice()), bland, best, shortlist)
        } else {
            self.price_columns((0..self.n).map(|j| &self.col[j * m..(j + 1) * m]), bland, best, shortlist)
        }
    }

    /// The item of the shortlist with the largest reduced cost above the tolerance, if any.
    fn price_shortlist(&self) -> Option<u32> {
        let mut best = self.dual_tol;
        let mut entering = None;
        // An item that has entered since (or left and is disallowed) has no price.
        for &j in self.shortlist.iter().filter(|&&j| self.price[j as usize] != f64::NEG_INFINITY) {
            let d = self.reduced_cost(j);
            if d > best {
                best = d;
                entering = Some(j);
            }
        }
        entering
    }

    /// [`Self::price_items`] over the items' `columns`, walked in step with every per-item array.
    #[inline(always)]
    fn price_columns<'c>(
        &self,
        columns: impl Iterator<Item = &'c [f64]>,
        bland: bool,
        best: &mut f64,
        shortlist: &mut Vec<u32>,
    ) -> Option<u32> {
        let lambda = &self.lambda[..self.rows];
        let mut entering = None;
        // The best SHORTLIST items of the pass, by reduced cost; `floor` is what an item must
        // beat to join them (the tolerance until they are all filled, then the weakest of them).
        let mut top = [(f64::NEG_INFINITY, 0u32); SHORTLIST];
        let tolerance = *best;
        let mut floor = tolerance;
        for (j, ((column, &price), &group)) in columns.zip(&self.price).zip(&self.c.item_group).enumerate() {
            // −∞ for an item that may not enter: never above `floor`.
            let d = price - dot(column, lambda) - self.mu[group as usize];
            if d > floor {
                if bland {
                    return Some(j as u32);
                }
                let weakest = (1..SHORTLIST).fold(0, |w, k| if top[k].0 < top[w].0 { k } else { w });
                top[weakest] = (d, j as u32);
                floor = top.iter().fold(f64::INFINITY, |f, t| f.min(t.0)).max(tolerance);
                if d > *best {
                    entering = Some(j as u32);
                    *best = d;
                }
            }
        }
        shortlist.extend(top.iter().filter(|t| t.0 > f64::NEG_INFINITY).map(|t| t.1));
        entering
    }

    /// Primal simplex from `basis`, which must be primal feasible (every basic variable within
    /// its bounds; the slack basis is when every group slack is allowed). `allowed[v]` says
    /// which variables may become positive.
    pub fn primal(&mut self, basis: &mut Basis, allowed: &[bool]) -> LpStatus {
        let limit = self.iteration_limit();
        // The group-sized scratch accumulates key rates below and must start at zero.
        self.scratch_g.iter_mut().for_each(|x| *x = 0.0);
        let mut degenerate = 0usize;
        let mut y = vec![0.0; self.rows];
        self.mark_basic(basis);
        self.price.clear();
        self.price.extend((0..self.n).map(|j| if allowed[j] && !self.basic[j] { self.c.value[j] } else { f64::NEG_INFINITY }));
        self.shortlist.clear();
        for _ in 0..limit {
            self.iterations += 1;
            if !self.refresh(basis) {
                return LpStatus::Failed;
            }
            // Entering: Dantzig's rule, or Bland's (smallest index) after a run of degenerate
            // pivots so that the method cannot cycle.
            let bland = degenerate > 30;
            let Some(entering) = self.primal_entering(allowed, bland) else {
                return LpStatus::Optimal;
            };
            self.ftran(basis, entering, &mut y);
            // Rates of change per unit of the entering variable.
            let mut step = f64::INFINITY;
            let mut leaving = None;
            let mut leaving_rate = 0.0f64;
            let mut consider = |x: f64, rate: f64, who: Leaving, step: &mut f64, leaving: &mut Option<Leaving>| {
                if rate < -PIVOT_TOL {
                    let t = x.max(0.0) / -rate;
                    if t < *step - 1e-12 || (t <= *step + 1e-12 && -rate > leaving_rate) {
                        *step = t;
                        *leaving = Some(who);
                        leaving_rate = -rate;
                    }
                }
            };
            for s in 0..self.rows {
                consider(self.x_nonkey[s], -y[s], Leaving::Slot(s), &mut step, &mut leaving);
            }
            let eg = self.group_of(entering);
            let mut key_rate = std::mem::take(&mut self.scratch_g);
            // The groups whose key moves: the entering variable's and the basic siblings'.
            let mut touched = [0usize; MAX_LP_ROWS + 1];
            let mut touched_count = 0;
            if eg != NO_GROUP {
                key_rate[eg as usize] -= 1.0;
                touched[0] = eg as usize;
                touched_count = 1;
            }
            for s in 0..self.rows {
                let g = self.group_of(basis.nonkey[s]);
                if g != NO_GROUP {
                    if !touched[..touched_count].contains(&(g as usize)) {
                        touched[touched_count] = g as usize;
                        touched_count += 1;
                    }
                    key_rate[g as usize] += y[s];
                }
            }
            for &g in &touched[..touched_count] {
                consider(self.x_key[g], key_rate[g], Leaving::Key(g), &mut step, &mut leaving);
                key_rate[g] = 0.0;
            }
            self.scratch_g = key_rate;
            let Some(leaving) = leaving else {
                return LpStatus::Failed; // unbounded cannot happen: every variable is at most 1
            };
            degenerate = if step <= 1e-12 { degenerate + 1 } else { 0 };
            let left = self.pivot(basis, leaving, entering) as usize;
            if (entering as usize) < self.n {
                self.price[entering as usize] = f64::NEG_INFINITY;
            }
            if left < self.n && allowed[left] {
                self.price[left] = self.c.value[left];
            }
        }
        LpStatus::Failed
    }

    /// Dual simplex from `basis`, which must be dual feasible for `allowed` (an optimal basis of
    /// a problem with fewer variables disallowed is).
    pub fn dual(&mut self, basis: &mut Basis, allowed: &[bool]) -> LpStatus {
        // A child is a few pivots from its parent; a long run means stalling on degenerate
        // pivots (this method has no anti-cycling rule), and the caller then falls back to the
        // primal simplex from scratch or to the bound at the duals reached.
        let limit = 3 * (self.rows + self.c.groups()) + 20;
        let m = self.rows;
        let mut rho = vec![0.0; m];
        let mut unit = vec![0.0; m];
        self.mark_basic(basis);
        let mut key_dot = std::mem::take(&mut self.scratch_g);
        // The allowed variables in index order, split by kind: deep in the search most items are
        // disallowed, and the ratio test then skips none of them.
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        candidates.extend((0..self.n as u32).filter(|&v| allowed[v as usize]));
        let items_end = candidates.len();
        candidates.extend((self.n..self.n + m).filter(|&v| allowed[v]).map(|v| v as u32));
        let rows_end = candidates.len();
        candidates.extend((self.n + m..self.vars()).filter(|&v| allowed[v]).map(|v| v as u32));
        let status = 'outer: {
            for _ in 0..limit {
                self.iterations += 1;
                if !self.refresh(basis) {
                    break 'outer LpStatus::Failed;
                }
                // Leaving: the most infeasible basic variable.
                let mut worst = PRIMAL_TOL;
                let mut leaving = None;
                let mut increase = true;
                for s in 0..m {
                    let (v, x) = (basis.nonkey[s], self.x_nonkey[s]);
                    if -x > worst {
                        (worst, leaving, increase) = (-x, Some(Leaving::Slot(s)), true);
                    } else if !allowed[v as usize] && x > worst {
                        (worst, leaving, increase) = (x, Some(Leaving::Slot(s)), false);
                    }
                }
                for (g, &v) in basis.key.iter().enumerate() {
                    let x = self.x_key[g];
                    if -x > worst {
                        (worst, leaving, increase) = (-x, Some(Leaving::Key(g)), true);
                    } else if !allowed[v as usize] && x > worst {
                        (worst, leaving, increase) = (x, Some(Leaving::Key(g)), false);
                    }
                }
                let Some(leaving) = leaving else {
                    break 'outer LpStatus::Optimal;
                };
                // The leaving variable's row of the tableau: α_j = ρ·(column j − column key(j)),
                // plus 1 for the members of the leaving key's own group.
                unit.iter_mut().for_each(|x| *x = 0.0);
                let own_group = match leaving {
                    Leaving::Slot(s) => {
                        unit[s] = 1.0;
                        NO_GROUP
                    }
                    Leaving::Key(h) => {
                        for s in 0..m {
                            if self.group_of(basis.nonkey[s]) == h as u32 {
                                unit[s] = -1.0;
                            }
                        }
                        h as u32
                    }
                };
                lu_solve_transposed(m, &self.lu, &self.perm, &unit, &mut rho);
                for g in 0..self.c.groups() {
                    key_dot[g] = self.dot_column(basis.key[g], &rho);
                }
                let direction = if increase { 1.0 } else { -1.0 };
                let mut entering = u32::MAX;
                let mut best_ratio = f64::INFINITY;
                let mut best_alpha = 0.0f64;
                // Ratio test over the nonbasic allowed variables, in index order (items, row
                // slacks, group slacks), each kind with its own form of α so that the loop over
                // the items, nearly all the variables, has no branch on the kind.
                let mut consider = |lp: &Lp, v: u32, alpha: f64| {
                    let a = direction * alpha;
                    if a < -PIVOT_TOL {
                        let d = lp.reduced_cost(v).min(0.0);
                        let ratio = d / a;
                        if ratio < best_ratio - 1e-12 || (ratio <= best_ratio + 1e-12 && -a > best_alpha) {
                            best_ratio = ratio;
                            best_alpha = -a;
                            entering = v;
                        }
                    }
                };
                let (items, rest) = candidates.split_at(items_end);
                let (row_slacks, group_slacks) = rest.split_at(rows_end - items_end);
                for &j in items {
                    if self.basic[j as usize] {
                        continue;
                    }
                    let column = &self.col[j as usize * m..(j as usize + 1) * m];
                    let g = self.c.item_group[j as usize];
                    let mut alpha = dot(column, &rho);
                    alpha -= key_dot[g as usize];
                    if g == own_group {
                        alpha += 1.0;
                    }
                    consider(self, j, alpha);
                }
                for &v in row_slacks {
                    if !self.basic[v as usize] {
                        consider(self, v, rho[v as usize - self.n]);
                    }
                }
                for &v in group_slacks {
                    if !self.basic[v as usize] {
                        let g = v as usize - self.n - m;
                        let mut alpha = -key_dot[g];
                        if g as u32 == own_group {
                            alpha += 1.0;
                        }
                        consider(self, v, alpha);
                    }
                }
                if entering == u32::MAX {
                    break 'outer LpStatus::Infeasible;
                }
                self.pivot(basis, leaving, entering);
            }
            LpStatus::Failed
        };
        self.scratch_g = key_dot;
        self.candidates = candidates;
        status
    }

}

#[derive(Debug, Clone, Copy)]
enum Leaving {
    Slot(usize),
    Key(usize),
}

/// `a · b` over the rows of this LP. Most calls are in pricing loops over every item, and most
/// hosts have four rows after pre-processing: that case is unrolled (the same sum, in the same
/// order, as the general loop).
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    if let (Ok(a), Ok(b)) = (<&[f64; 4]>::try_from(a), <&[f64; 4]>::try_from(b)) {
        return a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// LU factorisation with partial pivoting of the row-major `m x m` matrix `a`, in place.
fn lu_factor(m: usize, a: &mut [f64], perm: &mut [usize]) -> bool {
    for (i, p) in perm.iter_mut().enumerate() {
        *p = i;
    }
    for k in 0..m {
        let p = (k..m).max_by(|&i, &j| a[i * m + k].abs().total_cmp(&a[j * m + k].abs())).expect("k < m");
        if a[p * m + k].abs() < 1e-11 {
            return false;
        }
        if p != k {
            for j in 0..m {
                a.swap(p * m + j, k * m + j);
            }
            perm.swap(p, k);
        }
        let pivot = a[k * m + k];
        for i in k + 1..m {
            let f = a[i * m + k] / pivot;
            a[i * m + k] = f;
            if f != 0.0 {
                for j in k + 1..m {
                    a[i * m + j] -= f * a[k * m + j];
                }
            }
        }
    }
    true
}

/// Solves `A x = b` with the factorisation of `A`.
fn lu_solve(m: usize, lu: &[f64], perm: &[usize], b: &[f64], x: &mut [f64]) {
    for i in 0..m {
        let mut s = b[perm[i]];
        for j in 0..i {
            s -= lu[i * m + j] * x[j];
        }
        x[i] = s;
    }
    for i in (0..m).rev() {
        let mut s = x[i];
        for j in i + 1..m {
            s -= lu[i * m + j] * x[j];
        }
        x[i] = s / lu[i * m + i];
    }
}

/// Solves `A^T y = c` with the factorisation of `A` (`P A = L U`).
fn lu_solve_transposed(m: usize, lu: &[f64], perm: &[usize], c: &[f64], y: &mut [f64]) {
    // U^T z = c.
    let mut z = [0.0f64; MAX_LP_ROWS];
    for i in 0..m {
        let mut s = c[i];
        for j in 0..i {
            s -= lu[j * m + i] * z[j];
        }
        z[i] = s / lu[i * m + i];
    }
    // L^T w = z (unit diagonal), then y = P^T w.
    for i in (0..m).rev() {
        let mut s = z[i];
        for j in i + 1..m {
            s -= lu[j * m + i] * z[j];
        }
        z[i] = s;
    }
    for i in 0..m {
        y[perm[i]] = z[i];
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clearing::problem::Problem;

    /// A tiny seeded generator, so the random instances are the same on every run (the node
    /// LP's tests use it too).
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn random_problem(rng: &mut Rng) -> Problem {
        let rows = 1 + rng.below(4) as usize;
        let mut problem = Problem::new((0..rows).map(|_| 5 + rng.below(20)).collect());
        let groups = 1 + rng.below(5) as usize;
        for _ in 0..groups {
            problem.add_group();
        }
        for _ in 0..rng.below(14) {
            let g = rng.below(groups as u64) as usize;
            let value = (1 + rng.below(300)) as f64 / 10.0;
            let consumption: Vec<(usize, u64)> = (0..rows).map(|r| (r, rng.below(9))).collect();
            problem.add_item(g, value, consumption).unwrap();
        }
        problem
    }

    fn brute_force_integer_optimum(problem: &Problem) -> f64 {
        fn walk(g: usize, problem: &Problem, chosen: &mut Vec<usize>, best: &mut f64) {
            if g == problem.group_count() {
                if problem.infeasibility(chosen).is_none() {
                    *best = best.max(problem.value_of(chosen));
                }
                return;
            }
            walk(g + 1, problem, chosen, best);
            for i in (0..problem.item_count()).filter(|&i| problem.item(i).group == g) {
                chosen.push(i);
                walk(g + 1, problem, chosen, best);
                chosen.pop();
            }
        }
        let mut best = 0.0;
        walk(0, problem, &mut Vec::new(), &mut best);
        best
    }

    /// The LP's primal solution, checked against every constraint; returns its value.
    fn checked_primal_value(lp: &Lp, c: &Compiled, basis: &Basis, allowed: &[bool]) -> f64 {
        let mut used = vec![0.0; c.rows()];
        let mut group_sum = vec![0.0; c.groups()];
        let mut value = 0.0;
        for j in 0..c.items() {
            let x = lp.value(basis, j as u32);
            assert!(x >= -1e-9, "x[{j}] = {x} is negative");
            if !allowed[j] {
                assert!(x <= 1e-9, "disallowed x[{j}] = {x}");
            }
            group_sum[c.item_group[j] as usize] += x;
            value += x * c.value[j];
            for e in c.consumption(j as u32) {
                used[c.cons_row[e] as usize] += x * c.cons_fraction[e];
            }
        }
        for (r, &u) in used.iter().enumerate() {
            assert!(u <= 1.0 + 1e-9, "row {r} used {u}");
        }
        for (g, &s) in group_sum.iter().enumerate() {
            assert!(s <= 1.0 + 1e-9, "group {g} sums to {s}");
            if !allowed[lp.group_slack(g) as usize] {
                assert!(s >= 1.0 - 1e-9, "group {g} must choose but sums to {s}");
            }
        }
        value
    }

    /// The Lagrangian dual value at the LP's row duals (an upper bound for any λ ≥ 0).
    fn dual_value(lp: &Lp, c: &Compiled, allowed: &[bool]) -> f64 {
        let lambda: Vec<f64> = lp.lambda.iter().map(|&l| l.max(0.0)).collect();
        let mut bound: f64 = lambda.iter().sum();
        for g in 0..c.groups() {
            let mut best = if allowed[lp.group_slack(g) as usize] { 0.0 } else { f64::NEG_INFINITY };
            for i in c.group_start[g]..c.group_start[g + 1] {
                if allowed[i as usize] {
                    let rv = c.value[i as usize]
                        - c.consumption(i).map(|e| lambda[c.cons_row[e] as usize] * c.cons_fraction[e]).sum::<f64>();
                    best = best.max(rv);
                }
            }
            bound += best;
        }
        bound
    }

    fn lp_value(problem: &Problem) -> f64 {
        let c = Compiled::new(problem);
        let mut lp = Lp::new(&c);
        let mut basis = lp.slack_basis();
        let allowed = vec![true; lp.vars()];
        assert_eq!(lp.primal(&mut basis, &allowed), LpStatus::Optimal);
        checked_primal_value(&lp, &c, &basis, &allowed)
    }

    #[test]
    fn known_values() {
        // One row, three single-item groups: the fractional knapsack takes 6 and 2/5 of 5.
        let mut p = Problem::new(vec![7]);
        for (v, w) in [(6.0, 5), (5.0, 5), (4.0, 5)] {
            let g = p.add_group();
            p.add_item(g, v, [(0, w)]).unwrap();
        }
        assert!((lp_value(&p) - 8.0).abs() < 1e-9);
        // One group of two items over one row: half of each uses the row exactly.
        let mut p = Problem::new(vec![4]);
        let g = p.add_group();
        p.add_item(g, 3.0, [(0, 2)]).unwrap();
        p.add_item(g, 5.0, [(0, 6)]).unwrap();
        // The second item cannot fit alone and is dropped by pre-processing: the LP is 3.
        assert!((lp_value(&p) - 3.0).abs() < 1e-9);
        let mut p = Problem::new(vec![4, 100]);
        let g = p.add_group();
        p.add_item(g, 3.0, [(0, 2), (1, 60)]).unwrap();
        p.add_item(g, 5.0, [(0, 4), (1, 60)]).unwrap();
        let g = p.add_group();
        p.add_item(g, 1.0, [(0, 1), (1, 60)]).unwrap();
        // Row 0 (capacity 4) and row 1 (100, of which each item takes 60). Best LP: the 5-item
        // whole fills row 0, leaving nothing for the 1-item; a half/half mix (3 + 5)/2 = 4 with
        // 1 unit of row 0 left for 40/60 of the 1-item is worth 4 + 2/3 < 5. Optimum: 5.
        assert!((lp_value(&p) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn the_primal_is_optimal_by_duality_and_bounds_the_integer_optimum() {
        let mut rng = Rng(7);
        for _ in 0..3000 {
            let problem = random_problem(&mut rng);
            let c = Compiled::new(&problem);
            let mut lp = Lp::new(&c);
            let mut basis = lp.slack_basis();
            let allowed = vec![true; lp.vars()];
            assert_eq!(lp.primal(&mut basis, &allowed), LpStatus::Optimal, "{problem:?}");
            let primal = checked_primal_value(&lp, &c, &basis, &allowed);
            let dual = dual_value(&lp, &c, &allowed);
            assert!((primal - dual).abs() <= 1e-7 * primal.abs().max(1.0), "primal {primal} dual {dual}");
            assert!(primal >= brute_force_integer_optimum(&problem) - 1e-7);
        }
    }

    #[test]
    fn the_dual_simplex_reoptimises_after_disallowing_variables() {
        let mut rng = Rng(11);
        for _ in 0..3000 {
            let problem = random_problem(&mut rng);
            let c = Compiled::new(&problem);
            let mut lp = Lp::new(&c);
            let mut root = lp.slack_basis();
            let mut allowed = vec![true; lp.vars()];
            assert_eq!(lp.primal(&mut root, &allowed), LpStatus::Optimal);
            // Disallow a few items and maybe some groups' "nothing" option.
            for j in 0..c.items() {
                if rng.below(3) == 0 {
                    allowed[j] = false;
                }
            }
            for g in 0..c.groups() {
                if rng.below(4) == 0 {
                    allowed[lp.group_slack(g) as usize] = false;
                }
            }
            let mut warm = root.clone();
            let status = lp.dual(&mut warm, &allowed);
            let any_group_empty = (0..c.groups()).any(|g| {
                !allowed[lp.group_slack(g) as usize]
                    && (c.group_start[g]..c.group_start[g + 1]).all(|i| !allowed[i as usize])
            });
            if any_group_empty {
                assert_ne!(status, LpStatus::Optimal);
                continue;
            }
            if status == LpStatus::Infeasible {
                continue; // the groups that must choose cannot all fit
            }
            assert_eq!(status, LpStatus::Optimal);
            let primal = checked_primal_value(&lp, &c, &warm, &allowed);
            let dual = dual_value(&lp, &c, &allowed);
            assert!((primal - dual).abs() <= 1e-7 * primal.abs().max(1.0), "primal {primal} dual {dual}");
            // When every group may stay empty, the primal simplex from scratch agrees.
            if (0..c.groups()).all(|g| allowed[lp.group_slack(g) as usize]) {
                let mut fresh = lp.slack_basis();
                assert_eq!(lp.primal(&mut fresh, &allowed), LpStatus::Optimal);
                let again = checked_primal_value(&lp, &c, &fresh, &allowed);
                assert!((primal - again).abs() <= 1e-7 * primal.abs().max(1.0), "dual {primal} primal {again}");
            }
        }
    }
}

