//! Criterion benchmarks of the clearing engine: representative CATS instances (when the shared
//! benchmark directory is present) and synthetic 40 x 8 x 4 hosts, with and without VCG
//! payments. Distributions over many hosts (median, p99) come from `examples/host_timings.rs`;
//! the whole CATS set from `scripts/bench-cats.sh`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use entente_arbiter::clearing::{clear_host, solve, CatsInstance, ClearingOptions, SolveOptions, SyntheticHost};

fn cats_dir() -> PathBuf {
    match std::env::var_os("ENTENTE_CATS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/benchmarks/cats"),
    }
}

fn cats(c: &mut Criterion) {
    let mut group = c.benchmark_group("cats");
    group.sample_size(10);
    for name in ["small/paths_g50_b500_0000.txt", "small/regions_g40_b250_0000.txt", "int/arbitrary_g40_b200_int_0001.txt"] {
        let path = cats_dir().join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipping {}: not found (set ENTENTE_CATS_DIR)", path.display());
            continue;
        };
        let problem = CatsInstance::parse(&text).expect("benchmark instance parses").to_problem();
        group.bench_function(name, |b| b.iter(|| solve(&problem, &SolveOptions::default())));
    }
    group.finish();
}

fn hosts(c: &mut Criterion) {
    let mut group = c.benchmark_group("host_40x8x4");
    group.sample_size(10);
    let hosts: Vec<_> = (0..4).map(|seed| SyntheticHost::default().generate(seed)).collect();
    for payments in [false, true] {
        let options = ClearingOptions { time_limit: None, payments };
        let name = if payments { "4 hosts, with VCG" } else { "4 hosts, allocation only" };
        group.bench_function(name, |b| {
            b.iter(|| hosts.iter().map(|h| clear_host(h, &options).expect("valid").welfare).sum::<f64>())
        });
    }
    group.finish();
}

criterion_group!(benches, cats, hosts);
criterion_main!(benches);
