//! Monitoring: what a workload uses, how much it stalls, and its performance counters.
