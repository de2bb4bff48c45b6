//! One valid example of every message, as a client would build it.
//!
//! Tests across the workspace start from these and change one thing at a time, and
//! `docs/PROTOCOL.md` shows them; keeping a single set means an added field is exercised
//! everywhere at once.

use crate::*;
use uuid::Uuid;

pub fn host() -> HostId {
    HostId::new("host-a").expect("valid id")
}

pub fn workload() -> WorkloadId {
    WorkloadId::new("redis").expect("valid id")
}

pub fn host_registration() -> HostRegistration {
    HostRegistration {
        host: host(),
        capacity: ResourceVector::new(8_000, 32 << 30, 500 << 20, 1_250_000_000),
        enforces: vec![Resource::Cpu, Resource::Memory, Resource::DiskBw],
        backend: "cgroup-v2".into(),
        agent_version: "0.1.0".into(),
    }
}

pub fn workload_spec() -> WorkloadSpec {
    WorkloadSpec {
        host: host(),
        workload: workload(),
        tenant: TenantId::new("shop").expect("valid id"),
        class: WorkloadClass::LatencyCritical,
        priority: 80,
        slo: Slo::Metric {
            url: "http://127.0.0.1:9121/metrics".into(),
            metric: "redis_p99_latency_ms".into(),
            target: 2.0,
            higher_is_better: false,
        },
        estimated_execution_s: None,
        guaranteed: ResourceVector::new(1_000, 1 << 30, 10 << 20, 10 << 20),
        limit: ResourceVector::new(4_000, 4 << 30, 100 << 20, 100 << 20),
        budget: 1_000.0,
    }
}

pub fn telemetry() -> TelemetrySample {
    TelemetrySample {
        host: host(),
        workload: workload(),
        at_unix_ms: 1_790_000_000_000,
        interval_ms: 1_000,
        usage: Usage {
            cpu_millicores: 1_250.5,
            memory_bytes: 900_000_000.0,
            disk_read_bps: 0.0,
            disk_write_bps: 4_096.0,
            net_rx_bps: 2_000_000.0,
            net_tx_bps: 3_500_000.0,
        },
        pressure: Pressure {
            source: PsiSource::Cgroup,
            cpu_some: Some(3.2),
            cpu_full: Some(0.4),
            memory_some: Some(0.0),
            memory_full: Some(0.0),
            io_some: Some(0.1),
            io_full: None,
        },
        counters: Counters {
            source: CounterSource::Software,
            instructions: None,
            cycles: None,
            llc_misses: None,
            branch_misses: None,
            task_clock_ms: Some(1_250.0),
            context_switches: Some(4_200.0),
            page_faults: Some(12.0),
            cpu_migrations: Some(3.0),
        },
        scheduler: Scheduler {
            run_delay_ms: Some(310.0),
            throttled_ms: Some(0.0),
            cpu_quota_millicores: Some(1500.0),
            cpu_cap_millicores: Some(1500.0),
        },
    }
}

pub fn forecast() -> Forecast {
    let batch = WorkloadId::new("stress-cpu").expect("valid id");
    Forecast {
        host: host(),
        at_unix_ms: 1_790_000_001_000,
        horizon_ms: 5_000,
        model_version: "transformer-2026-11-28".into(),
        baseline: false,
        workloads: vec![
            WorkloadForecast { workload: workload(), usage: telemetry().usage, slowdown: 1.35 },
            WorkloadForecast { workload: batch.clone(), usage: Usage::default(), slowdown: 1.02 },
        ],
        interference: vec![Interference { victim: workload(), aggressor: batch.clone(), slowdown_delta: 0.3 }],
        frequent_pairs: vec![InterferingPair { victim: workload(), aggressor: batch, correlation: 0.82 }],
    }
}

pub fn round() -> RoundAnnouncement {
    RoundAnnouncement {
        round: 42,
        announced_at_unix_ms: 1_790_000_002_000,
        deadline_unix_ms: 1_790_000_002_600,
        interval_ms: 1_000,
        leader: 1,
        term: 3,
    }
}

pub fn bid() -> Bid {
    let spec = workload_spec();
    Bid {
        bid_id: Uuid::from_u128(0x6a1e_1c1a_9b0c_4c59_8f3e_51f2_a0d4_7b11),
        round: 42,
        host: host(),
        workload: workload(),
        bundles: vec![
            Bundle { id: "keep".into(), alloc: spec.guaranteed, value: 0.0, offer: Offer::Keep },
            Bundle {
                id: "grow".into(),
                alloc: ResourceVector::new(2_500, 2 << 30, 20 << 20, 20 << 20),
                value: 35.5,
                offer: Offer::Request,
            },
            Bundle {
                id: "trade".into(),
                alloc: ResourceVector::new(3_000, 2 << 30, 10 << 20, 20 << 20),
                value: 30.0,
                offer: Offer::TradeOff { give: Resource::DiskBw, take: Resource::Cpu },
            },
        ],
        standing_rounds: 3,
        forecast: ForecastSource::Predictor { model_version: "transformer-2026-11-28".into() },
    }
}

pub fn decision() -> Decision {
    Decision {
        round: 42,
        host: host(),
        term: 3,
        index: 1_234,
        decided_at_unix_ms: 1_790_000_002_650,
        lease_expires_unix_ms: 1_790_000_005_650,
        allocations: vec![Allocation {
            workload: workload(),
            alloc: ResourceVector::new(2_500, 2 << 30, 20 << 20, 20 << 20),
            bundle: Some("grow".into()),
            offer: Some(Offer::Request),
            value: 35.5,
            payment: 12.25,
        }],
        welfare: 35.5,
        optimal: true,
        unenforced: vec![Resource::NetBw],
    }
}

pub fn rejection() -> Rejection {
    Rejection {
        host: host(),
        workload: Some(workload()),
        round: Some(41),
        bid_id: Some(Uuid::from_u128(7)),
        reason: RejectReason::Late,
        detail: "bid for round 41 arrived 120 ms after its deadline".into(),
        at_unix_ms: 1_790_000_001_720,
    }
}

pub fn registration_reply() -> RegistrationReply {
    RegistrationReply::Refused { reason: "guarantee cpu=9000m exceeds the 7000m left on host-a".into() }
}

pub fn cluster_status() -> ClusterStatus {
    let spec = workload_spec();
    ClusterStatus {
        node: 2,
        leader: Some(1),
        term: 3,
        members: vec![1, 2, 3],
        last_round: 42,
        last_applied_index: Some(1_234),
        hosts_total: 1,
        workloads_total: 1,
        hosts: vec![HostStatus {
            host: host(),
            capacity: host_registration().capacity,
            backend: "cgroup-v2".into(),
            enforces: host_registration().enforces,
            workload_count: 1,
            workloads: vec![WorkloadStatus {
                workload: workload(),
                tenant: spec.tenant.clone(),
                class: spec.class,
                priority: spec.priority,
                guaranteed: spec.guaranteed,
                limit: spec.limit,
                allocation: decision().allocations[0].alloc,
                lease_expires_unix_ms: decision().lease_expires_unix_ms,
                bundle: Some("grow".into()),
                balance: 850.5,
                budget: spec.budget,
            }],
            last_decided_round: Some(42),
        }],
    }
}

pub fn membership_change() -> MembershipChange {
    MembershipChange { add: vec![4], remove: vec![2] }
}
