#!/usr/bin/env python3
"""Collects the predictor's training data from real contention on this host.

Why: the predictor must learn how co-located workloads slow each other down, and the only honest
source of that is running real workloads together and measuring them. This harness runs
stress-ng stressors of different kinds and a redis service under load, each in its own cgroup
(cgroup v1 controllers plus the cgroup2 hierarchy for PSI and perf, as the agent reads them),
alone and together under varying cpu and memory limits, and records once per second the same
telemetry figures the agent publishes (`TelemetrySample`, with the agent's definitions from
`agent/src/monitor/`). Each workload's throughput is measured per segment, and its solo
throughput under the same limits is measured in segments interleaved with the co-located ones,
so slowdown = solo throughput / co-located throughput.

An experiment is one simulated host: 2 to 4 workloads with random limits, run through a shuffled
sequence of segments in which different subsets are active (each workload alone `--solo-segments`
times, the rest co-located), so antagonists start, stop and change within the experiment.

Output (under --out): samples.csv.gz (one row per workload per second), segments.csv.gz (one row
per workload per segment, with throughput and slowdown), collection.json (the parameters).
Needs root, stress-ng, redis-server and redis-benchmark.
"""

import argparse
import ctypes
import csv
import gzip
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

CGROUP_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ["cpu", "cpuacct", "memory", "blkio"]
UNIFIED = os.path.join(CGROUP_ROOT, "unified")
PARENT = "entente-collect"
CPU_PERIOD_US = 100_000

# The stressors a workload may be. Each is one kind of pressure on the host.
STRESSORS = {
    "cpu": ["--cpu", "1", "--cpu-method", "matrixprod"],
    "cpu2": ["--cpu", "2", "--cpu-method", "int64"],
    "cache": ["--cache", "1"],
    # The arrays are sized for a 16 MiB L3 rather than for the host's: stress-ng sizes them from
    # the L3 the cpu reports, and on a virtual machine reporting 480 MiB `stream` ran 0.07–0.47
    # bogo-ops/s and measured nothing under any memory limit drawn below. With 16 MiB it ran 19.6
    # bogo-ops/s in a 256 MiB cgroup there.
    "stream": ["--stream", "1", "--stream-l3-size", "16M"],
    "vm": ["--vm", "1", "--vm-bytes", "160M", "--vm-keep"],
    "hdd": ["--hdd", "1", "--hdd-bytes", "48M"],
    "switch": ["--switch", "1"],
}
KINDS = list(STRESSORS) + ["redis"]
CPU_LIMITS = [None, 1.0, 0.5]  # cores; None = no quota
MEMORY_LIMITS = [None, 512 << 20, 256 << 20]  # bytes; every stressor's footprint but cache's fits in 256 MiB
# Room a memory limit must leave above `cache`'s buffer (the stressor's own code, stacks, page
# tables) for the stressor to run rather than to swap or be killed.
CACHE_LIMIT_MARGIN = 64 << 20


def l3_cache_bytes():
    """The last-level (L3) cache size the cpu reports in sysfs, which stress-ng's `cache`
    stressor sizes its buffer from; None where no L3 is reported."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        level = read_text(os.path.join(base, entry, "level"))
        size = read_text(os.path.join(base, entry, "size"))
        if level is None or size is None or level.strip() != "3":
            continue
        size = size.strip()
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        try:
            return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        except ValueError:
            return None
    return None


def memory_limits_for(kind, l3_bytes):
    """The memory limits a workload of this kind may be drawn with. `cache` thrashes a buffer the
    size of the reported L3, which on a virtual machine can be hundreds of MiB (260–480 MiB on the
    Xeons this was collected on): under a smaller limit it measured nothing (41 of its 96 active
    segments in one collection), so it is only drawn with limits its buffer fits in."""
    if kind != "cache" or l3_bytes is None:
        return MEMORY_LIMITS
    return [m for m in MEMORY_LIMITS if m is None or m >= l3_bytes + CACHE_LIMIT_MARGIN]

SAMPLE_FIELDS = [
    "experiment", "t", "at_unix_ms", "interval_ms", "workload", "kind", "active", "segment",
    "cpu_millicores", "memory_bytes", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps",
    "psi_source", "psi_cpu_some", "psi_cpu_full", "psi_memory_some", "psi_memory_full",
    "psi_io_some", "psi_io_full",
    "counter_source", "instructions", "cycles", "llc_misses", "branch_misses", "task_clock_ms",
    "context_switches", "page_faults", "cpu_migrations",
    "sched_source", "run_delay_ms", "throttled_ms", "cpu_quota_millicores", "cpu_cap_millicores",
    "host_cpu_cores", "loadavg1",
]
SEGMENT_FIELDS = [
    "experiment", "segment", "start_t", "end_t", "workload", "kind", "cpu_limit_cores",
    "memory_limit_bytes", "active", "solo", "co_runners", "throughput", "throughput_unit",
    "p99_ms", "solo_throughput", "solo_spread", "slowdown", "p99_ratio", "loadavg1_start", "loadavg1_end",
]


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def flat_keyed(text, key):
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == key:
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


def parse_avg10(text):
    """`some avg10=..`/`full avg10=..` lines, as agent/src/monitor/psi.rs parses them."""
    out = {"some": None, "full": None}
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts or parts[0] not in out:
            continue
        for field in parts[1:]:
            if field.startswith("avg10="):
                try:
                    out[parts[0]] = min(max(float(field[6:]), 0.0), 100.0)
                except ValueError:
                    pass
    return out


def parse_throttled_ns(text):
    """The throttled time in ns from a `cpu.stat` file: v1 `throttled_time` (ns), v2
    `throttled_usec`, as agent/src/monitor/sched.rs parses them."""
    ns = flat_keyed(text, "throttled_time")
    if ns is not None:
        return ns
    us = flat_keyed(text, "throttled_usec")
    return us * 1000 if us is not None else None


def parse_cfs_quota_millicores(quota_us, period_us):
    """A v1 cpu quota in millicores from `cpu.cfs_quota_us` and `cpu.cfs_period_us` (-1: none),
    as agent/src/monitor/sched.rs parses it."""
    try:
        quota, period = int(quota_us.strip()), int(period_us.strip())
    except (AttributeError, ValueError):
        return None
    return quota * 1000.0 / period if quota > 0 and period > 0 else None


def read_run_delays(tids):
    """Per-thread run delay in ns (second field of `/proc/<tid>/schedstat`): the time the thread
    was runnable but waited for a cpu, throttling included. Threads that are gone are skipped."""
    out = {}
    for tid in tids:
        text = read_text(f"/proc/{tid}/schedstat")
        if text is None:
            continue
        parts = text.split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[tid] = int(parts[1])
    return out


def run_delay_ns_since(before, now):
    """The run delay accrued between two per-thread readings: the growth of the threads present
    in both, plus the whole delay of threads that appeared (they started within the interval).
    Threads that exited take their last interval's delay with them; the agent does the same."""
    total = 0
    for tid, ns in now.items():
        b = before.get(tid)
        total += ns if b is None else max(ns - b, 0)
    return total


# --- perf events, the agent's way: per-CPU counters on the workload's cgroup2 directory ---

SYS_PERF_EVENT_OPEN = 298  # x86_64
PERF_FLAG_PID_CGROUP = 1 << 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
SOFTWARE_EVENTS = [("task_clock_ms", 1, 1), ("context_switches", 1, 3), ("page_faults", 1, 2), ("cpu_migrations", 1, 4)]
HARDWARE_EVENTS = [("instructions", 0, 1), ("cycles", 0, 0), ("llc_misses", 0, 3), ("branch_misses", 0, 5)]
_libc = ctypes.CDLL(None, use_errno=True)


def online_cpus():
    text = read_text("/sys/devices/system/cpu/online") or "0"
    cpus = []
    for part in text.strip().split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus.extend(range(int(a), int(b) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


def perf_open(type_, config, cgroup_fd, cpu):
    # perf_event_attr, PERF_ATTR_SIZE_VER0 (64 bytes): read_format = TOTAL_TIME_ENABLED |
    # TOTAL_TIME_RUNNING; flags: exclude_hv (bit 6), kernel time counted, enabled at once.
    attr = struct.pack("IIQQQQQIIQ", type_, 64, config, 0, 0, 3, 1 << 6, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, 64)
    fd = _libc.syscall(SYS_PERF_EVENT_OPEN, buf, cgroup_fd, cpu, -1,
                       PERF_FLAG_PID_CGROUP | PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "perf_event_open")
    return fd


class PerfCounters:
    """Software (and hardware, if a PMU exists) counters of one cgroup, read as rates."""

    def __init__(self, unified_dir):
        self.slots = {}
        self.source = "unavailable"
        self.last = {}
        try:
            self.dir_fd = os.open(unified_dir, os.O_RDONLY)
        except OSError:
            return
        cpus = online_cpus()

        def open_all(events):
            opened = {}
            try:
                for name, t, c in events:
                    opened[name] = [perf_open(t, c, self.dir_fd, cpu) for cpu in cpus]
            except OSError:
                for fds in opened.values():
                    for fd in fds:
                        os.close(fd)
                return None
            return opened

        software = open_all(SOFTWARE_EVENTS)
        if software is None:
            return
        hardware = open_all(HARDWARE_EVENTS)
        self.slots = dict(software)
        self.source = "software"
        if hardware is not None:
            self.slots.update(hardware)
            self.source = "hardware"

    def read_rates(self, elapsed_s):
        out = {name: None for name, _, _ in SOFTWARE_EVENTS + HARDWARE_EVENTS}
        for name, fds in self.slots.items():
            total = 0.0
            for fd in fds:
                value, enabled, running = struct.unpack("QQQ", os.read(fd, 24))
                if running == 0:
                    continue
                total += value * enabled / running if running < enabled else value
            before = self.last.get(name)
            self.last[name] = total
            if before is None or not elapsed_s:
                continue
            rate = max(total - before, 0.0) / elapsed_s
            out[name] = rate / 1e6 if name == "task_clock_ms" else rate
        return out

    def close(self):
        for fds in self.slots.values():
            for fd in fds:
                os.close(fd)
        if hasattr(self, "dir_fd"):
            os.close(self.dir_fd)


# --- one workload's cgroup and measurements ---

class WorkloadCgroup:
    def __init__(self, name, cpu_limit, memory_limit):
        self.name = name
        self.rel = f"{PARENT}/{name}"
        self.dirs = {c: os.path.join(CGROUP_ROOT, c, self.rel) for c in V1_CONTROLLERS}
        self.dirs["unified"] = os.path.join(UNIFIED, self.rel)
        for d in self.dirs.values():
            os.makedirs(d, exist_ok=True)
        cpu = self.dirs["cpu"]
        self._write(cpu, "cpu.cfs_period_us", CPU_PERIOD_US)
        self._write(cpu, "cpu.cfs_quota_us", int(cpu_limit * CPU_PERIOD_US) if cpu_limit else -1)
        self._write(self.dirs["memory"], "memory.limit_in_bytes", memory_limit if memory_limit else -1)
        self.perf = PerfCounters(self.dirs["unified"])
        self.last = None

    @staticmethod
    def _write(d, f, v):
        with open(os.path.join(d, f), "w") as fh:
            fh.write(str(v))

    def join(self):
        """Moves the calling process into every hierarchy (used before exec)."""
        pid = str(os.getpid())
        for d in self.dirs.values():
            with open(os.path.join(d, "cgroup.procs"), "w") as fh:
                fh.write(pid)

    def pids(self):
        text = read_text(os.path.join(self.dirs["cpuacct"], "cgroup.procs")) or ""
        return [int(p) for p in text.split()]

    def tids(self):
        text = read_text(os.path.join(self.dirs["cpuacct"], "tasks")) or ""
        return [int(p) for p in text.split()]

    def read_throttled_ns(self):
        return parse_throttled_ns(read_text(os.path.join(self.dirs["cpu"], "cpu.stat")))

    def read_cpu_quota_millicores(self):
        d = self.dirs["cpu"]
        return parse_cfs_quota_millicores(read_text(os.path.join(d, "cpu.cfs_quota_us")),
                                          read_text(os.path.join(d, "cpu.cfs_period_us")))

    def read_cpu_ns(self):
        text = read_text(os.path.join(self.dirs["cpuacct"], "cpuacct.usage"))
        return int(text) if text and text.strip().isdigit() else None

    def read_memory(self):
        usage = read_text(os.path.join(self.dirs["memory"], "memory.usage_in_bytes"))
        stat = read_text(os.path.join(self.dirs["memory"], "memory.stat"))
        if usage is None or stat is None:
            return None
        return max(int(usage) - (flat_keyed(stat, "total_inactive_file") or 0), 0)

    def read_io(self):
        d = self.dirs["blkio"]
        text = read_text(os.path.join(d, "blkio.throttle.io_service_bytes_recursive"))
        if text is None:
            text = read_text(os.path.join(d, "blkio.throttle.io_service_bytes"))
        if text is None:
            return None
        r = w = 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                if parts[1] == "Read":
                    r += int(parts[2])
                elif parts[1] == "Write":
                    w += int(parts[2])
        return r, w

    def read_net(self):
        pids = self.pids()
        if not pids:
            return None
        text = read_text(f"/proc/{pids[0]}/net/dev")
        if text is None:
            return None
        rx = tx = 0
        for line in text.splitlines():
            if ":" not in line:
                continue
            iface, fields = line.split(":", 1)
            if iface.strip() == "lo":
                continue
            try:
                nums = [int(x) for x in fields.split()]
            except ValueError:
                continue
            if len(nums) >= 9:
                rx += nums[0]
                tx += nums[8]
        return rx, tx

    def sample(self):
        """One TelemetrySample's figures, with the agent's definitions (sampler.rs)."""
        now = time.monotonic()
        reading = {"cpu": self.read_cpu_ns(), "io": self.read_io(), "net": self.read_net(),
                   "throttled": self.read_throttled_ns(), "delays": read_run_delays(self.tids())}
        memory = self.read_memory()
        last = self.last
        secs = now - last["at"] if last else None

        def rate(key, i=None):
            a = reading[key]
            b = last[key] if last else None
            if a is None or b is None or not secs:
                return 0.0
            if i is not None:
                a, b = a[i], b[i]
            return max(a - b, 0) / secs

        psi = {}
        for res in ["cpu", "memory", "io"]:
            psi[res] = parse_avg10(read_text(os.path.join(self.dirs["unified"], f"{res}.pressure")))
        cpu_text = read_text(os.path.join(self.dirs["unified"], "cpu.pressure"))
        row = {
            "cpu_millicores": rate("cpu") / 1e6,
            "memory_bytes": float(memory or 0),
            "disk_read_bps": rate("io", 0),
            "disk_write_bps": rate("io", 1),
            "net_rx_bps": rate("net", 0),
            "net_tx_bps": rate("net", 1),
            "psi_source": "cgroup" if cpu_text is not None else "unavailable",
            "counter_source": self.perf.source,
            "interval_ms": int(round(secs * 1000)) if secs else 0,
        }
        for res in ["cpu", "memory", "io"]:
            row[f"psi_{res}_some"] = psi[res]["some"]
            row[f"psi_{res}_full"] = psi[res]["full"]
        row.update(self.perf.read_rates(secs))
        row["sched_source"] = "schedstat"
        if last and secs:
            row["run_delay_ms"] = run_delay_ns_since(last["delays"], reading["delays"]) / secs / 1e6
            row["throttled_ms"] = rate("throttled") / 1e6
        else:
            row["run_delay_ms"] = row["throttled_ms"] = None
        # The cap as the agent computes it: the quota, or the host's cpus where those are fewer
        # (the collection's cgroups have no cpuset of their own).
        quota, cpus = self.read_cpu_quota_millicores(), 1000.0 * len(online_cpus())
        row["cpu_quota_millicores"] = quota
        row["cpu_cap_millicores"] = min(quota, cpus) if quota else cpus
        reading["at"] = now
        self.last = reading
        return row

    def kill_all(self):
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def remove(self):
        self.kill_all()
        self.perf.close()
        for d in self.dirs.values():
            for _ in range(20):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def host_cpu_ns():
    """Busy time of the whole host (all cpus), from /proc/stat, in ns."""
    fields = (read_text("/proc/stat") or "").splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    busy = sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    return busy * 1e9 / os.sysconf("SC_CLK_TCK")


def loadavg1():
    return float((read_text("/proc/loadavg") or "0").split()[0])


# --- the workloads' segment runs ---

class Workload:
    def __init__(self, name, kind, cpu_limit, memory_limit, tmpdir, port):
        self.name, self.kind = name, kind
        self.cpu_limit, self.memory_limit = cpu_limit, memory_limit
        self.cg = WorkloadCgroup(name, cpu_limit, memory_limit)
        self.tmpdir = os.path.join(tmpdir, name)
        os.makedirs(self.tmpdir, exist_ok=True)
        self.port = port
        self.server = None
        if kind == "redis":
            self.server = self._spawn(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                       "--bind", "127.0.0.1", "--protected-mode", "no"])
            for _ in range(100):
                if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)

    def _spawn(self, argv, **kw):
        return subprocess.Popen(argv, preexec_fn=self.cg.join, cwd=self.tmpdir,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kw)

    def run_segment(self, seconds, result):
        """Runs the workload for `seconds`; stores (throughput, unit, p99_ms) in result[name]."""
        if self.kind == "redis":
            result[self.name] = self._redis_segment(seconds)
        else:
            result[self.name] = self._stress_segment(seconds)

    def _stress_segment(self, seconds):
        yaml_path = os.path.join(self.tmpdir, "metrics.yaml")
        if os.path.exists(yaml_path):
            os.remove(yaml_path)
        argv = ["stress-ng", *STRESSORS[self.kind], "--timeout", f"{seconds}s", "--metrics-brief",
                "--yaml", yaml_path, "--temp-path", self.tmpdir]
        p = self._spawn(argv)
        p.communicate()
        text = read_text(yaml_path) or ""
        total = 0.0
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("bogo-ops-per-second-real-time:"):
                total += float(line.split(":", 1)[1])
        return (total if total > 0 else None), "bogo_ops_per_s", None

    def _redis_segment(self, seconds):
        deadline = time.monotonic() + seconds
        requests, elapsed, p99s = 0, 0.0, []
        while time.monotonic() < deadline - 0.2:
            n = 4000
            start = time.monotonic()
            p = self._spawn(["redis-benchmark", "-p", str(self.port), "-t", "set,get", "-n", str(n), "-c", "10",
                             "-r", "10000", "-d", "64", "--csv"])
            out, _ = p.communicate()
            took = time.monotonic() - start
            rows = list(csv.DictReader(out.decode().splitlines()))
            if len(rows) != 2:
                continue
            requests += 2 * n
            elapsed += took
            p99s.append(max(float(r["p99_latency_ms"]) for r in rows))
        if not elapsed:
            return None, "requests_per_s", None
        p99s.sort()
        return requests / elapsed, "requests_per_s", p99s[len(p99s) // 2]

    def close(self):
        if self.server:
            self.server.kill()
            self.server.wait()
        self.cg.remove()


def plan_experiment(rng, args, l3_bytes):
    n = rng.choice([2, 3, 3, 4])
    kinds = rng.sample(KINDS, n)
    workloads = []
    for i, kind in enumerate(kinds):
        workloads.append({"name": f"w{i}-{kind}", "kind": kind, "cpu_limit": rng.choice(CPU_LIMITS),
                          "memory_limit": rng.choice(memory_limits_for(kind, l3_bytes))})
    names = [w["name"] for w in workloads]
    segments = [[name] for name in names] * args.solo_segments
    for _ in range(args.colocated_segments):
        k = rng.randint(2, n)
        segments.append(sorted(rng.sample(names, k)))
    rng.shuffle(segments)
    return workloads, segments


class Sampler(threading.Thread):
    """Samples every workload once per interval, on one monotonic clock for the experiment."""

    def __init__(self, experiment, workloads, t0, interval, state):
        super().__init__(daemon=True)
        self.experiment, self.workloads, self.t0, self.interval = experiment, workloads, t0, interval
        self.state = state
        self.rows = []
        self.stop = threading.Event()

    def run(self):
        last_host = (time.monotonic(), host_cpu_ns())
        for w in self.workloads:
            w.cg.sample()  # the first reading has no rates, like the agent's first sample
        tick = 1
        while not self.stop.is_set():
            target = self.t0 + tick * self.interval
            delay = target - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                break
            now = time.monotonic()
            h = host_cpu_ns()
            host_cores = (h - last_host[1]) / 1e9 / (now - last_host[0])
            last_host = (now, h)
            at_ms = int(time.time() * 1000)
            la = loadavg1()
            active, segment = set(self.state["active"]), self.state["segment"]
            for w in self.workloads:
                row = w.cg.sample()
                row.update({"experiment": self.experiment, "t": tick, "at_unix_ms": at_ms, "workload": w.name,
                            "kind": w.kind, "active": int(w.name in active), "segment": segment,
                            "host_cpu_cores": round(host_cores, 4), "loadavg1": la})
                self.rows.append(row)
            tick += 1


def run_experiment(exp_id, rng, args, tmpdir, l3_bytes):
    plan, segments = plan_experiment(rng, args, l3_bytes)
    workloads = []
    try:
        for i, p in enumerate(plan):
            workloads.append(Workload(p["name"], p["kind"], p["cpu_limit"], p["memory_limit"], tmpdir,
                                      args.redis_port + i))
        state = {"active": [], "segment": -1}
        t0 = time.monotonic()
        sampler = Sampler(exp_id, workloads, t0, args.interval, state)
        sampler.start()
        time.sleep(args.interval * 1.5)  # an idle lead-in so every window starts from a quiet host
        seg_rows = []
        by_name = {w.name: w for w in workloads}
        for s_idx, active in enumerate(segments):
            state["active"], state["segment"] = active, s_idx
            la0 = loadavg1()
            start_t = (time.monotonic() - t0) / args.interval
            result = {}
            threads = [threading.Thread(target=by_name[n].run_segment, args=(args.segment_seconds, result))
                       for n in active]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            end_t = (time.monotonic() - t0) / args.interval
            la1 = loadavg1()
            for w in workloads:
                tp, unit, p99 = result.get(w.name, (None, None, None))
                seg_rows.append({"experiment": exp_id, "segment": s_idx, "start_t": round(start_t, 3),
                                 "end_t": round(end_t, 3), "workload": w.name, "kind": w.kind,
                                 "cpu_limit_cores": w.cpu_limit or "", "memory_limit_bytes": w.memory_limit or "",
                                 "active": int(w.name in active), "solo": int(active == [w.name]),
                                 "co_runners": "+".join(n for n in active if n != w.name),
                                 "throughput": tp if tp is not None else "", "throughput_unit": unit or "",
                                 "p99_ms": p99 if p99 is not None else "", "loadavg1_start": la0,
                                 "loadavg1_end": la1})
        state["active"], state["segment"] = [], -1
        time.sleep(args.interval * 1.5)
        sampler.stop.set()
        sampler.join()
    finally:
        for w in workloads:
            w.close()
    label_segments(seg_rows)
    return plan, sampler.rows, seg_rows


def label_segments(seg_rows):
    """Label: slowdown = solo throughput (same limits, same experiment) / throughput in the
    segment. The solo throughput is the mean over the workload's solo segments, which lie at
    random places in the experiment, so one unlucky solo run does not bias every label of the
    workload; `solo_spread` (their range over their mean) records how far they disagreed, which
    is the label noise the reference carries."""
    solos = defaultdict(list)
    for r in seg_rows:
        if r["solo"] and r["throughput"] != "":
            solos[r["workload"]].append(r)
    for r in seg_rows:
        runs = solos.get(r["workload"], [])
        tps = [s["throughput"] for s in runs]
        solo_tp = sum(tps) / len(tps) if tps else None
        p99s = [s["p99_ms"] for s in runs if s["p99_ms"] not in ("", None, 0)]
        solo_p99 = sum(p99s) / len(p99s) if p99s else None
        r["solo_throughput"] = round(solo_tp, 5) if solo_tp else ""
        r["solo_spread"] = round((max(tps) - min(tps)) / solo_tp, 5) if len(tps) >= 2 and solo_tp else ""
        ok = solo_tp and r["active"] and r["throughput"] not in ("", 0)
        r["slowdown"] = round(solo_tp / r["throughput"], 5) if ok else ""
        ok99 = ok and solo_p99 and r["p99_ms"] != ""
        r["p99_ratio"] = round(r["p99_ms"] / solo_p99, 5) if ok99 else ""


def append_csv(path, fields, rows):
    new = not os.path.exists(path)
    with gzip.open(path, "at", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="predictor/data", help="directory for the data files")
    ap.add_argument("--experiments", type=int, default=24)
    ap.add_argument("--first-experiment", type=int, default=0,
                    help="id of the first experiment (to add experiments to an existing data set)")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--segment-seconds", type=float, default=10.0)
    ap.add_argument("--colocated-segments", type=int, default=5)
    ap.add_argument("--solo-segments", type=int, default=2,
                    help="solo segments per workload; the solo throughput is their mean")
    ap.add_argument("--interval", type=float, default=1.0, help="sampling interval, seconds")
    ap.add_argument("--redis-port", type=int, default=6390)
    args = ap.parse_args()
    if args.experiments < 1:
        ap.error("--experiments must be at least 1")
    if args.segment_seconds < 2:
        ap.error("--segment-seconds must be at least 2 (stress-ng needs time to report a rate)")
    if args.colocated_segments < 1:
        ap.error("--colocated-segments must be at least 1")
    if args.solo_segments < 1:
        ap.error("--solo-segments must be at least 1 (the labels divide by the solo throughput)")
    if not 0.1 <= args.interval <= 60:
        ap.error("--interval must be between 0.1 and 60 seconds")
    if args.first_experiment and not os.path.exists(os.path.join(args.out, "collection.json")):
        ap.error(f"--first-experiment adds to an existing data set, but {args.out} holds none")

    if os.geteuid() != 0:
        sys.exit("collect_contention.py needs root: it creates cgroups and opens perf events on them")
    for tool in ["stress-ng", "redis-server", "redis-benchmark", "redis-cli"]:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install stress-ng redis-server redis-tools)")
    for c in V1_CONTROLLERS:
        if not os.path.isdir(os.path.join(CGROUP_ROOT, c)):
            sys.exit(f"cgroup v1 controller {c} is not mounted at {CGROUP_ROOT}/{c}; this harness needs the hybrid layout")
    if not os.path.isfile(os.path.join(UNIFIED, "cgroup.procs")):
        sys.exit(f"no cgroup2 hierarchy at {UNIFIED}")

    os.makedirs(args.out, exist_ok=True)
    params_path = os.path.join(args.out, "collection.json")
    params = json.load(open(params_path)) if os.path.exists(params_path) and args.first_experiment else {
        "runs": [], "experiments": []}
    l3_bytes = l3_cache_bytes()
    run_info = {"args": vars(args), "started_unix": int(time.time()), "host_cpus": os.cpu_count(),
                "kernel": os.uname().release, "stressors": STRESSORS, "cpu_limits_cores": CPU_LIMITS,
                "memory_limits_bytes": MEMORY_LIMITS, "l3_cache_bytes": l3_bytes,
                "cache_memory_limits_bytes": memory_limits_for("cache", l3_bytes),
                "stress_ng": subprocess.run(["stress-ng", "--version"], capture_output=True, text=True).stdout.strip(),
                "redis_benchmark": subprocess.run(["redis-benchmark", "--version"], capture_output=True,
                                                  text=True).stdout.strip()}
    params["runs"].append(run_info)
    rng = random.Random(args.seed)
    tmpdir = tempfile.mkdtemp(prefix="entente-collect-")
    try:
        for e in range(args.first_experiment, args.first_experiment + args.experiments):
            started = time.time()
            plan, samples, segs = run_experiment(e, rng, args, tmpdir, l3_bytes)
            append_csv(os.path.join(args.out, "samples.csv.gz"), SAMPLE_FIELDS, samples)
            append_csv(os.path.join(args.out, "segments.csv.gz"), SEGMENT_FIELDS, segs)
            params["experiments"].append({"experiment": e, "workloads": plan, "seconds": round(time.time() - started, 1)})
            run_info["finished_unix"] = int(time.time())
            with open(params_path, "w") as f:
                json.dump(params, f, indent=1)
            labelled = [s["slowdown"] for s in segs if s["slowdown"] != ""]
            print(f"experiment {e}: {len(plan)} workloads, {len(samples)} samples, slowdowns "
                  f"{min(labelled, default=0):.2f}..{max(labelled, default=0):.2f}, {time.time() - started:.0f} s",
                  flush=True)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        for c in V1_CONTROLLERS:
            try:
                os.rmdir(os.path.join(CGROUP_ROOT, c, PARENT))
            except OSError:
                pass
        try:
            os.rmdir(os.path.join(UNIFIED, PARENT))
        except OSError:
            pass


if __name__ == "__main__":
    main()
