//! The pairwise interference matrix: how much of each victim's predicted slowdown each co-runner
//! causes.
//!
//! The model predicts every slot's slowdown with all co-runners present and, in the same
//! inference, with each co-runner j removed (`slowdown_without[j, i]`). The interference of j on
//! i is the counterfactual difference `slowdown[i] - slowdown_without[j, i]`: positive when j's
//! absence would help i. Pure: no I/O.

use entente_protocol::{Interference, WorkloadId};

/// The interference entries of one batch. `workloads[k]` occupies slot k (slots beyond it are
/// absent); `slowdown` has one entry per slot, `slowdown_without` is `[slots, slots]` row-major
/// with the removed slot as row. Non-finite differences are left out.
pub fn interference_matrix(workloads: &[WorkloadId], slowdown: &[f32], slowdown_without: &[f32]) -> Vec<Interference> {
    let slots = slowdown.len();
    let present = workloads.len().min(slots);
    let mut out = Vec::with_capacity(present * present.saturating_sub(1));
    for (j, aggressor) in workloads.iter().enumerate().take(present) {
        for (i, victim) in workloads.iter().enumerate().take(present) {
            if i == j {
                continue;
            }
            let Some(without) = slowdown_without.get(j * slots + i) else { continue };
            let delta = f64::from(slowdown[i]) - f64::from(*without);
            if delta.is_finite() {
                out.push(Interference { victim: victim.clone(), aggressor: aggressor.clone(), slowdown_delta: delta });
            }
        }
    }
    out
}

/// Keeps the `limit` entries with the largest effect (by magnitude) when there are more, so a
/// forecast stays within what the wire accepts; the order of the kept entries is preserved.
pub fn strongest(mut entries: Vec<Interference>, limit: usize) -> Vec<Interference> {
    if entries.len() <= limit {
        return entries;
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| entries[b].slowdown_delta.abs().total_cmp(&entries[a].slowdown_delta.abs()));
    let mut keep = vec![false; entries.len()];
    for &k in order.iter().take(limit) {
        keep[k] = true;
    }
    let mut k = 0;
    entries.retain(|_| {
        k += 1;
        keep[k - 1]
    });
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<WorkloadId> {
        names.iter().map(|n| WorkloadId::new(*n).unwrap()).collect()
    }

    #[test]
    fn the_delta_is_slowdown_minus_slowdown_without_the_aggressor() {
        // 3 slots, 2 present: a (slot 0) and b (slot 1).
        let slowdown = [1.5, 1.2, 9.0];
        #[rustfmt::skip]
        let without = [
            // row j = 0 (a removed): b would be at 1.0
            9.0, 1.0, 9.0,
            // row j = 1 (b removed): a would be at 1.1
            1.1, 9.0, 9.0,
            // row j = 2: an absent slot, ignored
            0.0, 0.0, 0.0,
        ];
        let m = interference_matrix(&ids(&["a", "b"]), &slowdown, &without);
        assert_eq!(m.len(), 2);
        let get = |victim: &str, aggressor: &str| {
            m.iter().find(|p| p.victim.as_str() == victim && p.aggressor.as_str() == aggressor).unwrap().slowdown_delta
        };
        assert!((get("b", "a") - 0.2).abs() < 1e-6);
        assert!((get("a", "b") - 0.4).abs() < 1e-6);
    }

    #[test]
    fn a_lone_workload_has_no_interference_and_nan_is_dropped() {
        assert!(interference_matrix(&ids(&["a"]), &[1.0, 1.0], &[1.0; 4]).is_empty());
        let m = interference_matrix(&ids(&["a", "b"]), &[f32::NAN, 1.0], &[1.0; 4]);
        assert_eq!(m.len(), 1, "only b as victim is finite");
        assert_eq!(m[0].victim.as_str(), "b");
    }

    #[test]
    fn strongest_keeps_the_largest_effects_in_order() {
        let w = ids(&["a", "b", "c"]);
        let entry = |v: usize, a: usize, d: f64| Interference { victim: w[v].clone(), aggressor: w[a].clone(), slowdown_delta: d };
        let entries = vec![entry(0, 1, 0.1), entry(0, 2, -0.5), entry(1, 0, 0.3), entry(2, 0, 0.01)];
        let kept = strongest(entries.clone(), 2);
        assert_eq!(kept, vec![entries[1].clone(), entries[2].clone()]);
        assert_eq!(strongest(entries.clone(), 10), entries);
    }
}
