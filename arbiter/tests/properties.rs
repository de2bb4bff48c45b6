//! The solver and the VCG payments against brute force on small random instances.

use entente_arbiter::clearing::{
    clear, clear_host, solve, solve_within, Bundle, ClearingOptions, HostAuction, Problem, SolveOptions, WorkloadBid,
};
use entente_protocol::ResourceVector;
use proptest::prelude::*;

/// Every selection (at most one item per group), by enumeration.
fn brute_force_optimum(problem: &Problem, skip_group: Option<usize>) -> f64 {
    let groups = problem.group_count();
    let mut best = 0.0f64;
    let mut choice: Vec<Option<usize>> = vec![None; groups];
    fn walk(
        g: usize,
        problem: &Problem,
        skip: Option<usize>,
        choice: &mut Vec<Option<usize>>,
        best: &mut f64,
    ) {
        if g == choice.len() {
            let chosen: Vec<usize> = choice.iter().flatten().copied().collect();
            if problem.infeasibility(&chosen).is_none() {
                *best = best.max(problem.value_of(&chosen));
            }
            return;
        }
        choice[g] = None;
        walk(g + 1, problem, skip, choice, best);
        if Some(g) != skip {
            for i in (0..problem.item_count()).filter(|&i| problem.item(i).group == g) {
                choice[g] = Some(i);
                walk(g + 1, problem, skip, choice, best);
            }
        }
        choice[g] = None;
    }
    walk(0, problem, skip_group, &mut choice, &mut best);
    best
}

/// A problem of `groups` groups over rows of these capacities, with `items` as (group, value,
/// amount of each row).
fn problem_of(capacities: Vec<u64>, groups: usize, items: Vec<(usize, f64, Vec<u64>)>) -> Problem {
    let mut problem = Problem::new(capacities);
    for _ in 0..groups {
        problem.add_group();
    }
    for (group, value, amounts) in items {
        problem.add_item(group, value, amounts.into_iter().enumerate()).unwrap();
    }
    problem
}

fn arb_problem() -> impl Strategy<Value = Problem> {
    (1usize..4, 1usize..6).prop_flat_map(|(rows, groups)| {
        let capacities = prop::collection::vec(0u64..12, rows);
        let item = (
            0..groups,
            prop_oneof![(0u32..30).prop_map(f64::from), 0.0f64..30.0],
            prop::collection::vec(0u64..7, rows),
        );
        (capacities, prop::collection::vec(item, 0..14))
            .prop_map(move |(capacities, items)| problem_of(capacities, groups, items))
    })
}

/// Problems with more rows than the few-row search takes (12), so that they go to the set-packing
/// search with its node LP and clique cuts: sparse use of tight rows, as bids on goods have. About
/// one case in fifteen keeps enough tight rows and fractional LP points for the root to find cuts
/// (most rows are dropped as redundant or the LP is integral), some sixty per run.
fn arb_many_row_problem() -> impl Strategy<Value = Problem> {
    (16usize..24, 3usize..9).prop_flat_map(|(rows, groups)| {
        let capacities = prop::collection::vec(1u64..4, rows);
        let item = (
            0..groups,
            prop_oneof![(1u32..30).prop_map(f64::from), 0.5f64..30.0],
            prop::collection::vec(prop_oneof![5 => Just(0u64), 2 => Just(1u64), 1 => Just(2u64)], rows),
        );
        (capacities, prop::collection::vec(item, 4..18))
            .prop_map(move |(capacities, items)| problem_of(capacities, groups, items))
    })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-7 * a.abs().max(b.abs()).max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn solver_finds_the_brute_force_optimum(problem in arb_problem()) {
        let solution = solve(&problem, &SolveOptions::default());
        prop_assert!(solution.optimal);
        prop_assert_eq!(problem.infeasibility(&solution.chosen), None);
        prop_assert!(close(problem.value_of(&solution.chosen), solution.value));
        prop_assert!(close(solution.value, brute_force_optimum(&problem, None)));
    }

    #[test]
    fn the_set_packing_search_finds_the_brute_force_optimum(problem in arb_many_row_problem()) {
        let solution = solve(&problem, &SolveOptions::default());
        prop_assert!(solution.optimal);
        prop_assert_eq!(problem.infeasibility(&solution.chosen), None);
        prop_assert!(close(problem.value_of(&solution.chosen), solution.value));
        prop_assert!(close(solution.value, brute_force_optimum(&problem, None)));
    }

    #[test]
    fn vcg_payments_match_brute_force_and_are_individually_rational(problem in arb_problem()) {
        let clearing = clear(&problem, &SolveOptions::default(), true);
        prop_assert!(clearing.payments_exact);
        let welfare = clearing.solution.value;
        let mut winners = vec![None; problem.group_count()];
        for &i in &clearing.solution.chosen {
            winners[problem.item(i).group] = Some(problem.item(i).value);
        }
        for (group, won) in winners.iter().enumerate() {
            let payment = clearing.payments[group];
            match won {
                None => prop_assert_eq!(payment, 0.0, "a loser pays nothing"),
                Some(value) => {
                    prop_assert!(payment >= 0.0 && payment <= value + 1e-9, "0 <= payment <= value");
                    let expected = brute_force_optimum(&problem, Some(group)) - (welfare - value);
                    prop_assert!(close(payment, expected), "payment {} expected {}", payment, expected);
                }
            }
        }
    }

    #[test]
    fn a_host_allocation_fits_its_capacity_and_is_optimal(
        capacity in prop::collection::vec(0u64..20, 2),
        workloads in prop::collection::vec(
            (prop::collection::vec(0u64..4, 2), prop::collection::vec((prop::collection::vec(0u64..8, 2), 0.0f64..10.0), 0..4)),
            0..5),
    ) {
        let host = HostAuction {
            host: "h".into(),
            capacity: ResourceVector::new(capacity[0] + 8, capacity[1] + 8, 0, 0),
            workloads: workloads.iter().enumerate().map(|(w, (guaranteed, bundles))| {
                let guaranteed = ResourceVector::new(guaranteed[0], guaranteed[1], 0, 0);
                WorkloadBid {
                    workload: format!("w{w}"),
                    tenant: None,
                    guaranteed,
                    balance: None,
                    bundles: bundles.iter().enumerate().map(|(b, (extra, value))| Bundle {
                        id: format!("b{b}"),
                        alloc: guaranteed.checked_add(&ResourceVector::new(extra[0], extra[1], 0, 0)).unwrap(),
                        value: *value,
                    }).collect(),
                }
            }).collect(),
        };
        prop_assume!(host.validate().is_ok());
        let outcome = clear_host(&host, &ClearingOptions::default()).unwrap();
        let total = ResourceVector::checked_sum(outcome.workloads.iter().map(|w| &w.allocation)).unwrap();
        prop_assert!(total.fits_within(&host.capacity));
        // Brute force over every workload's options (nothing or one bundle), on the absolute amounts.
        let mut best = 0.0f64;
        let mut choice = vec![0usize; host.workloads.len()];
        loop {
            let mut used = ResourceVector::ZERO;
            let mut value = 0.0;
            for (w, &c) in host.workloads.iter().zip(&choice) {
                if c == 0 { used = used.checked_add(&w.guaranteed).unwrap(); }
                else { used = used.checked_add(&w.bundles[c - 1].alloc).unwrap(); value += w.bundles[c - 1].value; }
            }
            if used.fits_within(&host.capacity) { best = best.max(value); }
            let mut k = 0;
            while k < choice.len() && choice[k] == host.workloads[k].bundles.len() { choice[k] = 0; k += 1; }
            if k == choice.len() { break; }
            choice[k] += 1;
        }
        prop_assert!(close(outcome.welfare, best), "welfare {} brute force {}", outcome.welfare, best);
        for w in &outcome.workloads {
            prop_assert!(w.payment >= 0.0 && w.payment <= w.value + 1e-9);
            if w.bundle.is_none() { prop_assert_eq!(w.payment, 0.0); }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_relative_gap_is_honoured_and_reported(problem in arb_problem(), gap in 0.0f64..0.3) {
        let optimum = brute_force_optimum(&problem, None);
        let solution = solve_within(&problem, &SolveOptions::default(), gap);
        prop_assert!(solution.finished);
        prop_assert_eq!(problem.infeasibility(&solution.chosen), None);
        prop_assert!(close(problem.value_of(&solution.chosen), solution.value));
        prop_assert!(solution.value * (1.0 + gap) + 1e-7 >= optimum, "value {} optimum {}", solution.value, optimum);
        prop_assert!(solution.bound + 1e-7 >= optimum, "bound {} below optimum {}", solution.bound, optimum);
        if solution.optimal {
            prop_assert!(close(solution.value, optimum));
        }
    }
}
