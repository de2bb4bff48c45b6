//! The one problem shape every auction in entente reduces to.
//!
//! A host's round (a multi-dimensional multiple-choice knapsack), a set of hosts coupled by
//! cluster quotas, and a CATS winner-determination instance (set packing) are all the same thing:
//! *groups* of mutually exclusive *items* (one group per bidder: its XOR bid), each item a value
//! and a sparse, non-negative consumption over *rows* that each have a capacity; choose at most one
//! item per group so that no row is over capacity, maximising the sum of chosen values. Keeping a
//! single shape means a single solver to make fast and to test against brute force.
//!
//! Amounts are `u64` so that feasibility is decided exactly (no rounding can let an overfull
//! allocation through); values are `f64` credits.

use std::fmt;

/// Why an item or a problem was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProblemError {
    #[error("group {group} does not exist (there are {groups})")]
    NoSuchGroup { group: usize, groups: usize },
    #[error("row {row} does not exist (there are {rows})")]
    NoSuchRow { row: usize, rows: usize },
    #[error("item value {value} is not a finite number")]
    NonFiniteValue { value: f64 },
    #[error("row {row} appears twice in one item's consumption")]
    DuplicateRow { row: usize },
}

/// One option of a group: taking it earns `value` and uses `consumption` (row, amount) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub group: usize,
    pub value: f64,
    pub consumption: Vec<(usize, u64)>,
}

/// Groups of mutually exclusive items over capacitated rows. Items are numbered in the order they
/// were added; that number is what a [`Solution`](super::Solution) reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Problem {
    capacities: Vec<u64>,
    group_count: usize,
    items: Vec<Item>,
}

impl Problem {
    /// A problem with these row capacities, no groups and no items.
    pub fn new(capacities: Vec<u64>) -> Self {
        Problem { capacities, group_count: 0, items: Vec::new() }
    }

    /// Opens a new (empty) group and returns its number.
    pub fn add_group(&mut self) -> usize {
        self.group_count += 1;
        self.group_count - 1
    }

    /// Adds an item to `group`; zero amounts are dropped. Returns the item's number.
    pub fn add_item(
        &mut self,
        group: usize,
        value: f64,
        consumption: impl IntoIterator<Item = (usize, u64)>,
    ) -> Result<usize, ProblemError> {
        if group >= self.group_count {
            return Err(ProblemError::NoSuchGroup { group, groups: self.group_count });
        }
        if !value.is_finite() {
            return Err(ProblemError::NonFiniteValue { value });
        }
        let mut consumption: Vec<(usize, u64)> = consumption.into_iter().filter(|&(_, a)| a > 0).collect();
        // Callers mostly list rows in order already (every host's translation does).
        if !consumption.is_sorted() {
            consumption.sort_unstable();
        }
        for pair in consumption.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(ProblemError::DuplicateRow { row: pair[0].0 });
            }
        }
        if let Some(&(row, _)) = consumption.iter().find(|&&(row, _)| row >= self.capacities.len()) {
            return Err(ProblemError::NoSuchRow { row, rows: self.capacities.len() });
        }
        self.items.push(Item { group, value, consumption });
        Ok(self.items.len() - 1)
    }

    pub fn capacities(&self) -> &[u64] {
        &self.capacities
    }

    pub fn group_count(&self) -> usize {
        self.group_count
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Why `chosen` (item numbers) is not a feasible selection, or `None` if it is.
    pub fn infeasibility(&self, chosen: &[usize]) -> Option<Infeasibility> {
        let mut group_taken = vec![None; self.group_count];
        let mut used = vec![0u128; self.capacities.len()];
        for &i in chosen {
            let Some(item) = self.items.get(i) else {
                return Some(Infeasibility::NoSuchItem(i));
            };
            if let Some(other) = group_taken[item.group].replace(i) {
                return Some(Infeasibility::TwoItemsInGroup { group: item.group, items: (other, i) });
            }
            for &(row, amount) in &item.consumption {
                used[row] += u128::from(amount);
            }
        }
        used.iter()
            .zip(&self.capacities)
            .position(|(&u, &c)| u > u128::from(c))
            .map(|row| Infeasibility::OverCapacity { row })
    }

    /// Sum of the values of `chosen`.
    pub fn value_of(&self, chosen: &[usize]) -> f64 {
        chosen.iter().map(|&i| self.items[i].value).sum()
    }
}

/// What is wrong with a proposed selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Infeasibility {
    NoSuchItem(usize),
    TwoItemsInGroup { group: usize, items: (usize, usize) },
    OverCapacity { row: usize },
}

impl fmt::Display for Infeasibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Infeasibility::NoSuchItem(i) => write!(f, "item {i} does not exist"),
            Infeasibility::TwoItemsInGroup { group, items } => {
                write!(f, "group {group} has two items chosen: {} and {}", items.0, items.1)
            }
            Infeasibility::OverCapacity { row } => write!(f, "row {row} is over capacity"),
        }
    }
}
