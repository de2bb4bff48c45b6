//! Parsers for the cgroup and /proc accounting files the monitor reads (cpu, memory, disk, net).
//!
//! Every function takes the file's text and returns the cumulative counter or the gauge it holds,
//! so v1 and v2 formats are unit-tested on literal contents and the file reading stays a thin
//! edge in [`super::sampler`]. `None` means the text did not hold the figure.

/// v1 `cpuacct.usage`: total CPU time of the cgroup in nanoseconds.
pub fn parse_cpuacct_usage_ns(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v2 `cpu.stat`: `usage_usec`, converted to nanoseconds so both versions give the same unit.
pub fn parse_cpu_stat_usage_ns(text: &str) -> Option<u64> {
    flat_keyed(text, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// The value of `key` in a flat-keyed file (`key value` per line: `cpu.stat`, `memory.stat`).
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key)).then(|| parts.next()?.parse().ok()).flatten()
    })
}

/// Working-set memory, the figure the kernel's OOM decisions and kubelet use: usage minus the
/// inactive file cache, which the kernel reclaims first and so is not pressure on the workload.
///
/// v1: `memory.usage_in_bytes` minus `total_inactive_file` from `memory.stat` (hierarchical, so
/// it matches the hierarchical usage figure). v2: `memory.current` minus `inactive_file`.
pub fn working_set_bytes(usage_text: &str, stat_text: &str, v1: bool) -> Option<u64> {
    let usage: u64 = usage_text.trim().parse().ok()?;
    let inactive_key = if v1 { "total_inactive_file" } else { "inactive_file" };
    let inactive = flat_keyed(stat_text, inactive_key).unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

/// Cumulative bytes read and written by a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoBytes {
    pub read: u64,
    pub write: u64,
}

/// v1 `blkio.throttle.io_service_bytes` (or its `_recursive` twin): `MAJ:MIN Op bytes` lines,
/// summed over devices for the `Read` and `Write` ops. The per-cgroup `Total` line is ignored.
pub fn parse_blkio_service_bytes(text: &str) -> IoBytes {
    let mut io = IoBytes::default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [_device, op, bytes] = parts.as_slice() else { continue };
        let Ok(bytes) = bytes.parse::<u64>() else { continue };
        match *op {
            "Read" => io.read = io.read.saturating_add(bytes),
            "Write" => io.write = io.write.saturating_add(bytes),
            _ => {}
        }
    }
    io
}

/// v2 `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. ...` lines, summed over devices.
pub fn parse_io_stat(text: &str) -> IoBytes {
    let mut io = IoBytes::default();
    for line in text.lines() {
        for field in line.split_whitespace().skip(1) {
            let Some((key, value)) = field.split_once('=') else { continue };
            let Ok(value) = value.parse::<u64>() else { continue };
            match key {
                "rbytes" => io.read = io.read.saturating_add(value),
                "wbytes" => io.write = io.write.saturating_add(value),
                _ => {}
            }
        }
    }
    io
}

/// Cumulative bytes received and transmitted in one network namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetBytes {
    pub rx: u64,
    pub tx: u64,
}

/// `/proc/<pid>/net/dev`: the namespace's interfaces, summed except loopback (traffic a
/// workload sends itself costs no NIC bandwidth). Two header lines precede `iface: rx_bytes
/// rx_packets ... (8 rx fields) tx_bytes ...`.
pub fn parse_net_dev(text: &str) -> NetBytes {
    let mut net = NetBytes::default();
    for line in text.lines() {
        let Some((iface, fields)) = line.split_once(':') else { continue };
        if iface.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = match fields.split_whitespace().map(str::parse).collect() {
            Ok(f) => f,
            Err(_) => continue,
        };
        if fields.len() < 9 {
            continue;
        }
        net.rx = net.rx.saturating_add(fields[0]);
        net.tx = net.tx.saturating_add(fields[8]);
    }
    net
}

/// First pid listed in a `cgroup.procs` file: the process whose network namespace stands for
/// the workload's.
pub fn first_pid(procs_text: &str) -> Option<u32> {
    procs_text.lines().find_map(|l| l.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_usage_in_both_versions_is_nanoseconds() {
        assert_eq!(parse_cpuacct_usage_ns("123456789\n"), Some(123_456_789));
        let v2 = "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n";
        assert_eq!(parse_cpu_stat_usage_ns(v2), Some(2_500_000));
        assert_eq!(parse_cpu_stat_usage_ns("user_usec 3\n"), None);
        assert_eq!(parse_cpuacct_usage_ns("garbage"), None);
    }

    #[test]
    fn working_set_subtracts_inactive_file() {
        let v1_stat = "cache 4096\nrss 8192\ninactive_file 100\ntotal_inactive_file 1000\n";
        assert_eq!(working_set_bytes("10000\n", v1_stat, true), Some(9000));
        let v2_stat = "anon 8192\nfile 4096\ninactive_file 3000\nactive_file 96\n";
        assert_eq!(working_set_bytes("10000\n", v2_stat, false), Some(7000));
        // Never negative, even if the two files were read a moment apart.
        assert_eq!(working_set_bytes("10\n", v2_stat, false), Some(0));
        assert_eq!(working_set_bytes("", v2_stat, false), None);
    }

    #[test]
    fn blkio_sums_read_and_write_over_devices() {
        let text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\n\
                    8:16 Read 1\n8:16 Write 2\nTotal 12291\n";
        assert_eq!(parse_blkio_service_bytes(text), IoBytes { read: 4097, write: 8194 });
        assert_eq!(parse_blkio_service_bytes("Total 0\n"), IoBytes::default());
    }

    #[test]
    fn io_stat_sums_rbytes_and_wbytes() {
        let text = "8:0 rbytes=1000 wbytes=2000 rios=3 wios=4 dbytes=0 dios=0\n\
                    259:0 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(parse_io_stat(text), IoBytes { read: 1010, write: 2020 });
    }

    #[test]
    fn net_dev_skips_loopback_and_headers() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   55619     281    0    0    0     0          0         0    55619     281    0    0    0     0       0          0
  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0
  eth1:5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0
";
        assert_eq!(parse_net_dev(text), NetBytes { rx: 1005, tx: 2007 });
    }

    #[test]
    fn first_pid_skips_blank_lines() {
        assert_eq!(first_pid("\n42\n43\n"), Some(42));
        assert_eq!(first_pid(""), None);
    }
}
