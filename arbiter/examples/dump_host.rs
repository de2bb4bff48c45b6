//! Writes one synthetic host (see `clearing::synthetic`) as a JSON instance on stdout, for
//! `entente-arbiter solve --format json`.
//!
//! `cargo run --release -p entente-arbiter --example dump_host -- SEED`

use entente_arbiter::clearing::SyntheticHost;
use entente_protocol::Resource;
use serde_json::{json, Map, Value};

fn amounts(v: &entente_protocol::ResourceVector) -> Value {
    let mut m = Map::new();
    for r in Resource::ALL {
        if v.get(r) != 0 {
            m.insert(r.name().into(), json!(v.get(r)));
        }
    }
    Value::Object(m)
}

fn main() {
    let seed: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let host = SyntheticHost::default().generate(seed);
    let bidders: Vec<Value> = host
        .workloads
        .iter()
        .map(|w| {
            let bundles: Vec<Value> = w
                .bundles
                .iter()
                .map(|b| json!({"id": b.id, "alloc": amounts(&b.alloc), "value": b.value}))
                .collect();
            json!({"id": w.workload, "guaranteed": amounts(&w.guaranteed), "bundles": bundles})
        })
        .collect();
    println!("{}", json!({"capacity": amounts(&host.capacity), "bidders": bidders}));
}
