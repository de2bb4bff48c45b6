//! Seeded generator of plausible host rounds, for benchmarks and tests.
//!
//! Real rounds are not recorded yet, so the engine is measured on rounds shaped like the ones the
//! design expects: tens of workloads per host, a handful of bundles each, four resources, and
//! capacity tight enough that not everyone wins. Each workload holds a guarantee (together about
//! half the host), and bids eight bundles: four sizes of extra resources (a quarter of its wish
//! up to all of it) in a balanced and a trade-off variant (more of one resource, less of
//! another). Values grow concavely with the share of the host asked for, at a per-workload price,
//! so bigger bundles are worth more but less per unit. Summed over workloads, the full wishes ask
//! for about 2.5 times what is left above the guarantees.
//!
//! The generator has its own tiny PRNG (splitmix64) so a seed means the same round everywhere.

use entente_protocol::ResourceVector;

use super::auction::{Bundle, HostAuction, WorkloadBid};

/// Shape of a synthetic host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticHost {
    pub workloads: usize,
    /// Bundles per workload (even numbers give balanced/trade-off pairs).
    pub bundles: usize,
    /// Total wish above guarantees over what is left above guarantees.
    pub oversubscription: f64,
}

impl Default for SyntheticHost {
    fn default() -> Self {
        SyntheticHost { workloads: 40, bundles: 8, oversubscription: 2.5 }
    }
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl SyntheticHost {
    /// The host named `host-<seed>` generated from `seed`.
    pub fn generate(&self, seed: u64) -> HostAuction {
        let mut rng = SplitMix64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED);
        // 64 cores, 256 GiB, 2 GB/s disk, 25 Gbit/s network.
        let capacity = ResourceVector::new(64_000, 256 << 30, 2_000_000_000, 3_125_000_000);
        let cap = capacity.as_array();
        let n = self.workloads.max(1) as f64;
        let mut workloads = Vec::with_capacity(self.workloads);
        for w in 0..self.workloads {
            let guaranteed: [u64; 4] =
                std::array::from_fn(|r| (cap[r] as f64 * 0.5 / n * rng.uniform(0.5, 1.5)).floor() as u64);
            let wish: [f64; 4] =
                std::array::from_fn(|r| cap[r] as f64 * 0.5 * self.oversubscription / n * rng.uniform(0.2, 1.8));
            let price = rng.uniform(0.5, 2.0);
            let (give, take) = ((rng.next() % 4) as usize, (rng.next() % 4) as usize);
            let base = ResourceVector::new(guaranteed[0], guaranteed[1], guaranteed[2], guaranteed[3]);
            let bundles = (0..self.bundles)
                .map(|b| {
                    let scale = ((b / 2) % 4 + 1) as f64 / 4.0 * rng.uniform(0.9, 1.1);
                    let mut extra: [f64; 4] = std::array::from_fn(|r| wish[r] * scale);
                    if b % 2 == 1 && give != take {
                        extra[take] += extra[give] * 0.4;
                        extra[give] *= 0.6;
                    }
                    let share: f64 = (0..4).map(|r| extra[r] / (cap[r] as f64 * 0.5)).sum::<f64>() / 4.0;
                    let value = price * 100.0 * share.powf(0.7) * rng.uniform(0.9, 1.1);
                    let alloc = ResourceVector::new(
                        base.cpu + extra[0] as u64,
                        base.memory + extra[1] as u64,
                        base.disk_bw + extra[2] as u64,
                        base.net_bw + extra[3] as u64,
                    );
                    Bundle { id: format!("b{b}"), alloc, value: (value * 100.0).round() / 100.0 }
                })
                .collect();
            workloads.push(WorkloadBid {
                workload: format!("w{w}"),
                tenant: None,
                guaranteed: base,
                balance: None,
                bundles,
            });
        }
        HostAuction { host: format!("host-{seed}"), capacity, workloads }
    }
}
