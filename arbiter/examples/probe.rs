use entente_arbiter::clearing::*;
use std::time::{Duration, Instant};
fn main() {
    for seed in 0..5u64 {
        let host = SyntheticHost::default().generate(seed);
        let joint = {
            // rebuild problem like joint_problem
            let mut caps = host.capacity.as_array().to_vec();
            for w in &host.workloads { for (c, g) in caps.iter_mut().zip(w.guaranteed.as_array()) { *c -= g; } }
            let mut p = Problem::new(caps);
            for w in &host.workloads { let g = p.add_group(); for b in &w.bundles { let e = b.alloc.saturating_sub(&w.guaranteed).as_array(); p.add_item(g, b.value, e.into_iter().enumerate()).unwrap(); } }
            p
        };
        let quick = solve(&joint, &SolveOptions { time_limit: Some(Duration::from_nanos(1)) });
        let t = Instant::now();
        let full = solve(&joint, &SolveOptions::default());
        let warm = clear_warm(&joint, &full.chosen);
        println!("  warm-started with the optimum: nodes {}", warm);
        println!("seed {seed}: root bound {:.3} first {:.3} opt {:.3} nodes {} {:?}", quick.bound, quick.value, full.value, full.nodes, t.elapsed());
    }
}

fn clear_warm(p: &Problem, chosen: &[usize]) -> u64 {
    entente_arbiter::clearing::solver::solve_warm(p, &SolveOptions::default(), chosen).nodes
}
