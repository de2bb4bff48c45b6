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

/// One option of a group, as the problem stores it: taking it earns `value` and uses
/// `consumption` (row, amount) pairs, ascending by row, with no zero amounts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item<'a> {
    pub group: usize,
    pub value: f64,
    pub consumption: &'a [(usize, u64)],
}

/// Groups of mutually exclusive items over capacitated rows. Items are numbered in the order they
/// were added; that number is what a [`Solution`](super::Solution) reports.
///
/// Items are stored flat (every item's consumption in one array) rather than as an allocation
/// each: a host's round is translated into a problem hundreds of times a second, and one
/// allocation per bundle was a seventh of clearing a host.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    capacities: Vec<u64>,
    group_count: usize,
    item_group: Vec<usize>,
    item_value: Vec<f64>,
    /// Consumption of item `i` is `consumption[consumption_start[i]..consumption_start[i + 1]]`.
    consumption_start: Vec<usize>,
    consumption: Vec<(usize, u64)>,
}

impl Problem {
    /// A problem with these row capacities, no groups and no items.
    pub fn new(capacities: Vec<u64>) -> Self {
        Self::with_capacity(capacities, 0, 0)
    }

    /// [`Problem::new`] with room for `items` items and `entries` (row, amount) pairs in all, so
    /// that adding them does not reallocate.
    pub fn with_capacity(capacities: Vec<u64>, items: usize, entries: usize) -> Self {
        let mut consumption_start = Vec::with_capacity(items + 1);
        consumption_start.push(0);
        Problem {
            capacities,
            group_count: 0,
            item_group: Vec::with_capacity(items),
            item_value: Vec::with_capacity(items),
            consumption_start,
            consumption: Vec::with_capacity(entries),
        }
    }

    /// Opens a new (empty) group and returns its number.
    pub fn add_group(&mut self) -> usize {
        self.group_count += 1;
        self.group_count - 1
    }

    /// Adds an item to `group`; zero amounts are dropped. Returns the item's number. A refused
    /// item leaves the problem as it was.
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
        let start = self.consumption.len();
        // Callers mostly list distinct rows in order already (every host's translation does):
        // checked on the way in, that leaves nothing to sort and no row twice.
        let (mut strictly_ascending, mut previous) = (true, None);
        for (row, amount) in consumption.into_iter().filter(|&(_, amount)| amount > 0) {
            strictly_ascending &= previous.is_none_or(|p| p < row);
            previous = Some(row);
            self.consumption.push((row, amount));
        }
        let entries = &mut self.consumption[start..];
        if !strictly_ascending {
            entries.sort_unstable();
        }
        let duplicate = if strictly_ascending { None } else { entries.windows(2).find(|pair| pair[0].0 == pair[1].0) };
        let error = if let Some(pair) = duplicate {
            Some(ProblemError::DuplicateRow { row: pair[0].0 })
        } else {
            // Sorted: only the last row can be out of range.
            entries
                .last()
                .filter(|&&(row, _)| row >= self.capacities.len())
                .map(|&(row, _)| ProblemError::NoSuchRow { row, rows: self.capacities.len() })
        };
        if let Some(error) = error {
            self.consumption.truncate(start);
            return Err(error);
        }
        self.item_group.push(group);
        self.item_value.push(value);
        self.consumption_start.push(self.consumption.len());
        Ok(self.item_group.len() - 1)
    }

    pub fn capacities(&self) -> &[u64] {
        &self.capacities
    }

    pub fn group_count(&self) -> usize {
        self.group_count
    }

    pub fn item_count(&self) -> usize {
        self.item_group.len()
    }

    /// Item `i` (as numbered by [`Problem::add_item`]). Panics if there is no such item.
    #[inline]
    pub fn item(&self, i: usize) -> Item<'_> {
        Item {
            group: self.item_group[i],
            value: self.item_value[i],
            consumption: self.consumption_of(i),
        }
    }

    /// Every item, in order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = Item<'_>> + '_ {
        (0..self.item_count()).map(|i| self.item(i))
    }

    /// The group of every item, in item order.
    pub(crate) fn item_groups(&self) -> &[usize] {
        &self.item_group
    }

    /// The value of every item, in item order.
    pub(crate) fn item_values(&self) -> &[f64] {
        &self.item_value
    }

    /// Item `i`'s (row, amount) pairs: [`Problem::item`]'s consumption without the rest.
    #[inline]
    pub(crate) fn consumption_of(&self, i: usize) -> &[(usize, u64)] {
        &self.consumption[self.consumption_start[i]..self.consumption_start[i + 1]]
    }

    /// Total (row, amount) entries over all items.
    pub fn entry_count(&self) -> usize {
        self.consumption.len()
    }

    /// Why `chosen` (item numbers) is not a feasible selection, or `None` if it is.
    pub fn infeasibility(&self, chosen: &[usize]) -> Option<Infeasibility> {
        let mut group_taken = vec![None; self.group_count];
        let mut used = vec![0u128; self.capacities.len()];
        for &i in chosen {
            if i >= self.item_count() {
                return Some(Infeasibility::NoSuchItem(i));
            }
            let item = self.item(i);
            if let Some(other) = group_taken[item.group].replace(i) {
                return Some(Infeasibility::TwoItemsInGroup { group: item.group, items: (other, i) });
            }
            for &(row, amount) in item.consumption {
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
        chosen.iter().map(|&i| self.item_value[i]).sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_rows_sorted_without_zero_amounts() {
        let mut problem = Problem::new(vec![10, 10, 10]);
        let g = problem.add_group();
        let i = problem.add_item(g, 4.0, [(2, 3), (0, 1), (1, 0)]).unwrap();
        assert_eq!(problem.item(i), Item { group: g, value: 4.0, consumption: &[(0, 1), (2, 3)] });
        assert_eq!(problem.entry_count(), 2);
    }

    #[test]
    fn a_refused_item_leaves_the_problem_as_it_was() {
        let mut problem = Problem::new(vec![10, 10]);
        let g = problem.add_group();
        problem.add_item(g, 1.0, [(0, 2)]).unwrap();
        let before = problem.clone();
        assert_eq!(problem.add_item(g, 2.0, [(1, 1), (1, 2)]), Err(ProblemError::DuplicateRow { row: 1 }));
        assert_eq!(problem.add_item(g, 2.0, [(0, 1), (5, 1)]), Err(ProblemError::NoSuchRow { row: 5, rows: 2 }));
        assert_eq!(problem.add_item(g + 1, 2.0, [(0, 1)]), Err(ProblemError::NoSuchGroup { group: 1, groups: 1 }));
        assert_eq!(problem.add_item(g, f64::NAN, [(0, 1)]).unwrap_err().to_string(), "item value NaN is not a finite number");
        assert_eq!(problem, before);
        // And the next item is numbered and stored as if nothing had been refused.
        assert_eq!(problem.add_item(g, 3.0, [(1, 4)]), Ok(1));
        assert_eq!(problem.item(1).consumption, &[(1, 4)]);
    }
}
