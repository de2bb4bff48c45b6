#!/usr/bin/env python3
"""The colocation experiment: does entente keep a latency-critical service within its SLO while
best-effort work shares the host, compared with no control, a static partition and a reactive
controller? (Issue #8; run through `scripts/colocation-experiment`, which builds what it needs.)

One run of one policy on this machine:

* redis-server (Debian) in cgroup `colo-lc`, loaded by the open-loop generator
  `agent/examples/redis_openloop.rs` at a fixed rate (latency measured from each request's
  scheduled send time, so queueing shows in the tail);
* best-effort antagonists (stress-ng: cpu, cache, memory bandwidth, io), each kind in its own
  cgroup (`colo-be/<kind>`, or `colo-be-<kind>` under entente: see `be_leaf`), started,
  stopped and changed in phase by the scripted timeline (`scripted_timeline`);
* one policy controlling the cpu of those cgroups:
  - ``none``: no limits at all;
  - ``static``: the best-effort parent `colo-be` capped at a fixed quota (half the host's cpus),
    never changed;
  - ``reactive``: a PARTIES/Heracles-style controller, every second: latency slack
    (SLO - p99) / SLO of the last second < 0 halves the best-effort quota, < 0.1 shrinks it by
    one step, > 0.3 grows it by one step (a step is 5 % of the host's cpus);
  - ``entente``: nats-server, three arbiters, the predictor and the agent; the agent negotiates
    for `colo-lc` (latency-critical, SLO p99 from the generator's metrics endpoint) and every
    `colo-be-<kind>` (best-effort) and enforces the decisions on the cgroups;
  - ``entente-observe`` (an ablation, only when named in ``--policies``): the same control plane
    deciding every round, but the agent's dry-run backend enforcing nothing and the antagonists
    where no control has them, so that against ``none`` it shows what the control plane itself
    costs the service.

The host is a subset of the machine's cpus (`--host-cpus`, by default all but the first): the
service, the antagonists and the agent run there, while the control plane that a deployment runs
on other machines, the load generator and this harness run on the rest (see `Layout`).

Per policy it reports the share of 1 s windows whose p99 breaks the SLO, p99 and p999 over the
run, best-effort throughput (stress-ng bogo-ops/s per stressor, and an index relative to no
control), the best-effort cpu-seconds, and the number of allocation changes (sampled from the
cgroup files each second, the same way for every policy). Policies run interleaved (the order
reverses on every repetition) and each policy's runs are pooled.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import free_port, log

CG = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ["cpu", "cpuacct", "memory", "blkio"]
UNIFIED = CG / "unified"
# Top-level cgroups, so that redis competes with the rest of the host as one group of its own.
LC = "colo-lc"
BE = "colo-be"
# The load generator is the measuring instrument, not a workload: it runs in a cgroup of its own
# with a high cpu weight (the same under every policy), so that what it measures is the server's
# latency rather than its own waits for a cpu.
CLIENT = "colo-client"
CLIENT_SHARES = 8192
CONTROL = "colo-control"
CONTROL_SHARES = 128
# entente's agent: on the host, in a cgroup of its own so that its cpu is measured apart.
AGENT = "colo-agent"
BE_KINDS = ["cpu", "cache", "mem", "io"]
PERIOD_US = 100_000
NCPU = os.cpu_count() or 1
POLICIES = ["none", "static", "reactive", "entente"]
# An ablation, run only when named in --policies: entente's whole control plane (NATS, arbiters,
# predictor, agent) deciding every round, but the agent enforcing nothing (its dry-run backend)
# and the antagonists where no control has them. Against `none` it measures what running the
# control plane beside the service costs, apart from what enforcement does.
ABLATIONS = ["entente-observe"]

# The scripted timeline, in seconds of a 150 s run (scaled to --seconds): which stress-ng runs in
# which best-effort cgroup, and when. Kinds overlap and change phase (cpu at full then half load).
# `n` is the number of the host's cpus: the full-load phases run one worker per host cpu.
TIMELINE_LENGTH = 150.0


def scripted_timeline(n):
    return [
        # (start, end, kind, stress-ng arguments)
        (10, 50, "cpu", ["--cpu", str(n), "--cpu-method", "matrixprod"]),
        (50, 70, "cpu", ["--cpu", str(n), "--cpu-method", "matrixprod", "--cpu-load", "50"]),
        (35, 80, "cache", ["--cache", str(n)]),
        (80, 110, "mem", ["--stream", str(n)]),
        (95, 125, "io", ["--hdd", "1", "--hdd-bytes", "64m"]),
        (125, 145, "cpu", ["--cpu", "1", "--cpu-method", "matrixprod"]),
        (125, 145, "cache", ["--cache", "1"]),
        (125, 145, "mem", ["--stream", "1"]),
    ]


class Layout:
    """Which cpus are the measured host and which stand in for the other machines.

    A deployment runs NATS, the arbiters and the predictor on machines of their own, and the load
    generator is the measuring instrument, not a workload. On one machine they can only be kept
    off the measured host by pinning: the host (redis, the antagonists and, as on any host,
    entente's agent) runs on `host_cpus`, everything else (the control plane, the generator,
    this harness) on `offhost_cpus`. With `--host-cpus all` everything shares every cpu (the
    layout of the earlier results). Every policy gets the same layout, and every cpu figure of
    the policies (static partition, reactive steps, the agent's capacity) is a share of the
    host's cpus, not the machine's."""

    def __init__(self, host_cpus, offhost_cpus):
        self.host_cpus, self.offhost_cpus = list(host_cpus), list(offhost_cpus)
        self.shared = self.host_cpus == self.offhost_cpus
        self.host_milli = len(self.host_cpus) * 1000
        # Static partition: half the host to the best-effort work (the single-threaded service
        # needs at most one core). Reactive: steps and floor of 5 % of the host.
        self.static_be_milli = self.host_milli // 2
        self.reactive_step = self.host_milli // 20
        self.reactive_min = self.host_milli // 20

    @classmethod
    def parse(cls, spec):
        """`--host-cpus`: `auto` (every cpu but the first, when there are two or more), `all`, or
        a comma-separated list of cpu numbers; the cpus not named are the off-host ones."""
        every = sorted(os.sched_getaffinity(0))
        if spec == "all":
            return cls(every, every)
        if spec == "auto":
            host = every[1:] if len(every) > 1 else every
        else:
            try:
                host = sorted({int(c) for c in spec.split(",") if c.strip()})
            except ValueError:
                raise ValueError(f"--host-cpus {spec!r}: expected 'auto', 'all' or cpu numbers such as 1 or 2,3")
        unknown = [c for c in host if c not in every]
        if not host or unknown:
            raise ValueError(f"--host-cpus {spec!r}: cpus {unknown or host} are not among this process's cpus {every}")
        rest = [c for c in every if c not in host]
        return cls(host, rest or every)

    @classmethod
    def of_run(cls, run):
        """The layout a recorded run used (runs from before layouts shared every cpu)."""
        every = list(range(run.get("nproc", NCPU)))
        return cls(run.get("host_cpus", every), run.get("offhost_cpus", every))

    def timeline(self, seconds):
        scale = seconds / TIMELINE_LENGTH
        return sorted((s * scale, e * scale, kind, argv) for s, e, kind, argv in scripted_timeline(len(self.host_cpus)))

    def describe(self):
        if self.shared:
            return f"host and control plane share cpus {self.host_cpus}"
        return f"host on cpus {self.host_cpus}, control plane and load generator on cpus {self.offhost_cpus}"


# ---------------------------------------------------------------- cgroups

def be_leaf(policy, kind):
    """The cgroup of one kind of best-effort work. The baselines act on one knob, the parent
    `colo-be`, so their antagonists live below it; entente manages each workload, and a
    workload's cpu weight only counts against its siblings, so under entente the antagonists are
    siblings of `colo-lc` (`colo-be-<kind>`), as containers are on a host. Below a shared parent
    of fixed weight the agent's weights would divide only the parent's share among the
    antagonists and never reach the contention with redis."""
    return f"{BE}-{kind}" if policy == "entente" else f"{BE}/{kind}"


def is_entente(policy):
    return policy in ("entente", "entente-observe")


def be_leaves(policy):
    return [be_leaf(policy, k) for k in BE_KINDS]


# Every antagonist cgroup of either layout, for set-up and clean-up.
ALL_BE_LEAVES = sorted({be_leaf(p, k) for p in POLICIES + ABLATIONS for k in BE_KINDS})


def cg_dirs(path):
    return [CG / c / path for c in V1_CONTROLLERS] + [UNIFIED / path]


def make_cgroups():
    for path in [CLIENT, CONTROL, AGENT, LC, BE] + ALL_BE_LEAVES:
        for d in cg_dirs(path):
            d.mkdir(parents=True, exist_ok=True)


def remove_cgroups():
    for path in ALL_BE_LEAVES + [LC, BE, CLIENT, CONTROL, AGENT]:
        for d in cg_dirs(path):
            try:
                d.rmdir()
            except OSError:
                pass


def join_cgroup(path):
    """Moves the calling process into `path` in every hierarchy."""
    pid = str(os.getpid())
    for d in cg_dirs(path):
        (d / "cgroup.procs").write_text(pid)


def place(path, cpus):
    """A preexec_fn: the child joins cgroup `path` and runs on `cpus` (its children inherit both)."""
    def enter():
        join_cgroup(path)
        os.sched_setaffinity(0, cpus)
    return enter


def set_quota(path, milli):
    """cpu quota in millicores; None removes it."""
    quota = -1 if milli is None else max(1000, int(milli * PERIOD_US / 1000))
    (CG / "cpu" / path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (CG / "cpu" / path / "cpu.cfs_quota_us").write_text(str(quota))


def read_quota(path):
    try:
        q = int((CG / "cpu" / path / "cpu.cfs_quota_us").read_text())
        p = int((CG / "cpu" / path / "cpu.cfs_period_us").read_text())
    except OSError:
        return None
    return None if q < 0 else q * 1000 // p


def read_shares(path):
    try:
        return int((CG / "cpu" / path / "cpu.shares").read_text())
    except OSError:
        return None


def read_cpu_ns(path):
    try:
        return int((CG / "cpuacct" / path / "cpuacct.usage").read_text())
    except OSError:
        return 0


def read_throttled(path):
    """How many cfs periods `path` has been throttled in (`cpu.stat` nr_throttled), 0 if unknown."""
    try:
        for line in (CG / "cpu" / path / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "nr_throttled":
                return int(value)
    except OSError:
        pass
    return 0


def host_busy_ns():
    """cpu time the whole host spent busy (not idle or iowait), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def reset_limits():
    for path in [LC, BE, CONTROL] + ALL_BE_LEAVES:
        try:
            # Out of the idle class first (where the kernel has one): it refuses a weight there.
            idle = CG / "cpu" / path / "cpu.idle"
            if idle.exists():
                idle.write_text("0")
            set_quota(path, None)
            (CG / "cpu" / path / "cpu.shares").write_text("1024")
            (CG / "memory" / path / "memory.limit_in_bytes").write_text("-1")
        except OSError as e:
            log(f"cannot reset {path}: {e}")


def kill_cgroup(path):
    for _ in range(50):
        procs = (CG / "cpu" / path / "cgroup.procs").read_text().split()
        if not procs:
            return
        for p in procs:
            try:
                os.kill(int(p), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


# ---------------------------------------------------------------- processes

def scrape(url, timeout=0.5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            try:
                out[name] = float(value.split()[0])
            except (ValueError, IndexError):
                pass
    return out


def stop(proc, sig=signal.SIGTERM, wait=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Entente:
    """nats-server, three arbiters, the predictor and the agent, for one run."""

    def __init__(self, args, work, metrics_url, slo_ms, policy="entente"):
        self.args, self.work, self.procs, self.policy = args, work, [], policy
        self.nats_port = free_port()
        self.agent_metrics = free_port()
        self.metrics_url, self.slo_ms = metrics_url, slo_ms

    def spawn(self, name, argv, env=None):
        out = open(self.work / f"{name}.log", "w")
        # The agent runs on the host like any agent would. The rest of the control plane (NATS,
        # arbiters, predictor), which a deployment runs on other machines, runs off the host's
        # cpus (see `Layout`), and in a cgroup of low cpu weight so that, where the layout
        # shares cpus, it competes with the service as little as it can.
        layout = self.args.layout
        if name == "agent":
            enter = place(AGENT, layout.host_cpus)
        else:
            enter = place(CONTROL, layout.offhost_cpus)
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=enter)
        self.procs.append((name, p))
        return p

    def config(self):
        gib = 1 << 30
        host_milli = self.args.layout.host_milli
        lines = [
            'host = "colo-host"',
            "interval_ms = 1000",
            f'backend = "{"dry-run" if self.policy == "entente-observe" else "cgroup-v1"}"',
            f"capacity = {{ cpu = {host_milli}, memory = {20 * gib}, disk_bw = 0, net_bw = 0 }}",
            "",
            "[[workload]]",
            'id = "redis"',
            f'cgroup = "{LC}"',
            'class = "latency_critical"',
            "priority = 90",
            f'slo = {{ type = "metric", url = "{self.metrics_url}", metric = "redis_p99_ms", '
            f"target = {self.slo_ms}, higher_is_better = false }}",
            f"guaranteed = {{ cpu = {self.args.lc_guarantee_milli}, memory = {256 << 20}, disk_bw = 0, net_bw = 0 }}",
            f"limit = {{ cpu = {host_milli}, memory = {gib}, disk_bw = 0, net_bw = 0 }}",
        ]
        for kind in BE_KINDS:
            lines += [
                "",
                "[[workload]]",
                f'id = "be-{kind}"',
                f'cgroup = "{be_leaf(self.policy, kind)}"',
                'class = "best_effort"',
                *([f'cpu_enforcement = "{self.args.be_cpu_enforcement}"'] if self.args.be_cpu_enforcement else []),
                "priority = 20",
                # Memory is not what this experiment is about: the guarantee is the whole limit.
                # stress-ng sizes its cache and stream buffers from the last-level cache (one
                # stream instance allocated 3 GiB on a Xeon reporting 260 MiB of L3), and a memory
                # allocation is a hard limit from the first second, so a smaller guarantee got
                # the stressor killed before the agent saw it grow.
                f"guaranteed = {{ cpu = {self.args.be_guarantee_milli}, memory = {4 * gib}, disk_bw = 0, net_bw = 0 }}",
                f"limit = {{ cpu = {host_milli}, memory = {4 * gib}, disk_bw = 0, net_bw = 0 }}",
            ]
        path = self.work / "agent.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self):
        bins = self.args.bin_dir
        nats_url = f"nats://127.0.0.1:{self.nats_port}"
        conf = self.work / "nats.conf"
        conf.write_text(f'listen: 127.0.0.1:{self.nats_port}\nmax_payload: 16MB\njetstream {{ store_dir: "{self.work}/js" }}\n')
        self.spawn("nats", [self.args.nats_server, "-c", str(conf)])
        time.sleep(0.5)
        for n in (1, 2, 3):
            self.spawn(f"arbiter-{n}", [f"{bins}/entente-arbiter", "run", "--node-id", str(n), "--peers", "1,2,3",
                                        "--data-dir", str(self.work / f"arbiter-{n}"), "--nats", nats_url,
                                        "--round-ms", "1000"])
        self.spawn("predictor", [f"{bins}/entente-predictor", "run", "--nats", nats_url,
                                 "--model-dir", str(self.args.model_dir)])
        self.spawn("agent", [f"{bins}/entente-agent", "run", "--config", str(self.config()), "--nats", nats_url,
                             "--metrics-addr", f"127.0.0.1:{self.agent_metrics}"],
                   env={**os.environ, "ENTENTE_LOG": "info,entente_agent::negotiator=debug"})
        # Ready when the agent has enforced a decision.
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                m = scrape(f"http://127.0.0.1:{self.agent_metrics}/metrics")
                if any(k.startswith("entente_agent_decisions_enforced") and v > 0 for k, v in m.items()):
                    return
            except OSError:
                pass
            for name, p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited early; see {self.work}/{name}.log")
            time.sleep(0.5)
        raise RuntimeError(f"no decision enforced within 60 s; see {self.work}")

    def stop(self):
        for name, p in reversed(self.procs):
            stop(p, signal.SIGINT if name == "agent" else signal.SIGTERM)
        self.procs = []


# ---------------------------------------------------------------- one run

def run_once(args, policy, rep, out_dir):
    name = f"{policy}-{rep}"
    layout = args.layout
    work = Path(tempfile.mkdtemp(prefix=f"colo-{name}-"))
    log(f"run {name}: {args.seconds:.0f} s")
    make_cgroups()
    reset_limits()
    (CG / "cpu" / CLIENT / "cpu.shares").write_text(str(CLIENT_SHARES))
    (CG / "cpu" / CONTROL / "cpu.shares").write_text(str(CONTROL_SHARES))
    # Off the host, the control plane stands in for other machines and shares its cpus only with
    # the measuring instrument (the load generator), which it must not delay: it runs in the
    # kernel's idle class there, where the kernel has one. Sharing the host's cpus, it keeps its
    # low weight, so that what it costs the service is measured.
    control_idle = CG / "cpu" / CONTROL / "cpu.idle"
    if control_idle.exists():
        control_idle.write_text("0" if layout.shared else "1")
    redis_port, metrics_port = free_port(), free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--protected-mode", "no", "--dir", str(work)],
        stdout=open(work / "redis.log", "w"), stderr=subprocess.STDOUT, preexec_fn=place(LC, layout.host_cpus))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", redis_port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    entente = None
    stressors = []  # (kind, start, end, proc, yaml path)
    samples = []
    adjustments = 0
    try:
        if policy == "static":
            set_quota(BE, layout.static_be_milli)
        elif policy == "reactive":
            set_quota(BE, layout.static_be_milli)
        elif is_entente(policy):
            entente = Entente(args, work, metrics_url, args.slo_ms, policy)
            entente.start()
        loadgen = subprocess.Popen(
            [f"{args.bin_dir}/examples/redis_openloop", "--addr", f"127.0.0.1:{redis_port}", "--rate", str(args.rate),
             "--duration-s", str(args.seconds), "--out", str(work / "latency.jsonl"),
             "--metrics-port", str(metrics_port)],
            stdout=subprocess.PIPE, stderr=open(work / "loadgen.err", "w"), preexec_fn=place(CLIENT, layout.offhost_cpus))
        plan = layout.timeline(args.seconds)
        t0 = time.time()
        pending = list(plan)
        running = {}
        reactive_quota = layout.static_be_milli
        # Best-effort cpu is summed over the antagonists' own cgroups, whichever the layout.
        accounted = [LC, CLIENT, CONTROL, AGENT] + be_leaves(policy)
        # The cpu knobs sampled each second; samples name the antagonists `be/<kind>` in either
        # layout.
        knobs = {LC: "lc", BE: "be", **{be_leaf(policy, k): f"be/{k}" for k in BE_KINDS}}
        last_cpu = {p: read_cpu_ns(p) for p in accounted}
        last_busy = host_busy_ns()
        last_throttled = read_throttled(LC)
        last_quotas = None
        tick = 1
        while time.time() - t0 < args.seconds:
            now = time.time() - t0
            # Start what is due (a kind's previous phase is stopped by its own timeout).
            while pending and pending[0][0] <= now:
                s, e, kind, argv = pending.pop(0)
                if kind in running and running[kind][3].poll() is None:
                    stop(running[kind][3], signal.SIGINT, 5)
                y = work / f"stress-{kind}-{int(s)}.yaml"
                path = be_leaf(policy, kind)
                tmp = work / f"io-{kind}"
                tmp.mkdir(exist_ok=True)
                proc = subprocess.Popen(
                    ["stress-ng", *argv, "--timeout", f"{max(1, round(e - s))}s", "--metrics", "--yaml", str(y),
                     "--temp-path", str(tmp)],
                    stdout=subprocess.DEVNULL, stderr=open(work / f"stress-{kind}.err", "a"),
                    preexec_fn=place(path, layout.host_cpus))
                running[kind] = (s, e, kind, proc, y)
                stressors.append((kind, s, e, proc, y))
            # Sleep to the next whole second of the run.
            time.sleep(max(0.0, t0 + tick - time.time()))
            tick += 1
            try:
                m = scrape(metrics_url, 0.3)
            except OSError:
                m = {}
            p99 = m.get("redis_p99_ms")
            if policy == "reactive" and p99 is not None and m.get("redis_rps", 0) > 0:
                slack = (args.slo_ms - p99) / args.slo_ms
                new = reactive_quota
                if slack < 0:
                    new = max(layout.reactive_min, reactive_quota // 2)
                elif slack < 0.1:
                    new = max(layout.reactive_min, reactive_quota - layout.reactive_step)
                elif slack > 0.3:
                    new = min(layout.host_milli, reactive_quota + layout.reactive_step)
                if new != reactive_quota:
                    reactive_quota = new
                    set_quota(BE, None if new >= layout.host_milli else new)
            quotas = {p: read_quota(p) for p in knobs}
            shares = {p: read_shares(p) for p in knobs}
            # A change of a cgroup's quota or weight (or both) in a second is one adjustment.
            if last_quotas is not None:
                adjustments += sum(1 for p in quotas if (quotas[p], shares[p]) != last_quotas[p])
            last_quotas = {p: (quotas[p], shares[p]) for p in quotas}
            cpu = {p: read_cpu_ns(p) for p in accounted}
            busy = host_busy_ns()
            throttled = read_throttled(LC)
            ours = sum(cpu[p] - last_cpu[p] for p in cpu)
            samples.append({
                # Everything else on the host: the policy's own processes (entente's binaries,
                # this harness) and whatever else the machine runs.
                "other_cpu_milli": max(0.0, (busy - last_busy - ours) / 1e6),
                "client_cpu_milli": (cpu[CLIENT] - last_cpu[CLIENT]) / 1e6,
                "control_cpu_milli": (cpu[CONTROL] - last_cpu[CONTROL]) / 1e6,
                "agent_cpu_milli": (cpu[AGENT] - last_cpu[AGENT]) / 1e6,
                # Periods in which the service's own quota stopped it (policies that cap it).
                "lc_throttled_periods": throttled - last_throttled,
                "t": round(time.time() - t0, 3),
                "p99_ms": p99,
                "lc_cpu_milli": (cpu[LC] - last_cpu[LC]) / 1e6,
                "be_cpu_milli": sum(cpu[p] - last_cpu[p] for p in be_leaves(policy)) / 1e6,
                "quota_milli": {knobs[p]: q for p, q in quotas.items()},
                "shares": {knobs[p]: w for p, w in shares.items()},
                "active": sorted(k for k, v in running.items() if v[3].poll() is None),
            })
            last_cpu, last_busy, last_throttled = cpu, busy, throttled
        out, _ = loadgen.communicate(timeout=30)
        summary = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        for kind, s, e, proc, y in stressors:
            stop(proc, signal.SIGINT, 5)
        for path in be_leaves(policy):
            kill_cgroup(path)
        if entente:
            entente.stop()
        stop(redis)
        reset_limits()
    # Per-second latency windows (the first two seconds warm up).
    windows = [json.loads(l) for l in (work / "latency.jsonl").read_text().splitlines() if l.strip()]
    windows = [w for w in windows if w["second"] > 2 and w["count"] > 0]
    bogo = {}
    for kind, s, e, proc, y in stressors:
        ops = 0.0
        if y.exists():
            for line in y.read_text().splitlines():
                line = line.strip()
                if line.startswith("bogo-ops:"):
                    ops += float(line.split(":", 1)[1])
        stressor = next(a for a in plan if a[2] == kind)[3][0].lstrip("-")
        name_ = {"cpu": "cpu", "cache": "cache", "stream": "stream", "hdd": "hdd"}[stressor]
        b = bogo.setdefault(name_, {"ops": 0.0, "seconds": 0.0})
        b["ops"] += ops
        b["seconds"] += e - s
    result = {
        "policy": policy, "rep": rep, "seconds": args.seconds,
        "nproc": NCPU, "host_cpus": layout.host_cpus, "offhost_cpus": layout.offhost_cpus,
        "rate": args.rate, "slo_ms": args.slo_ms,
        "loadgen": summary, "windows": windows, "samples": samples, "bogo": bogo,
        "adjustments": adjustments,
        "be_cpu_s": sum(s["be_cpu_milli"] for s in samples) / 1000,
        "other_cpu_cores": sum(s["other_cpu_milli"] for s in samples) / max(1, len(samples)) / 1000,
        "control_cpu_cores": sum(s["control_cpu_milli"] for s in samples) / max(1, len(samples)) / 1000,
        "agent_cpu_cores": sum(s["agent_cpu_milli"] for s in samples) / max(1, len(samples)) / 1000,
        "loadavg_after": os.getloadavg()[0],
    }
    (out_dir / f"run-{name}.json").write_text(json.dumps(result))
    if args.keep_logs:
        shutil.copytree(work, out_dir / f"logs-{name}", ignore=shutil.ignore_patterns("js", "arbiter-*", "io-*"),
                        dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    viol = sum(1 for w in windows if w["p99_us"] / 1000 > args.slo_ms)
    log(f"run {name}: p99 {summary['p99_us']/1000:.2f} ms, p999 {summary['p999_us']/1000:.2f} ms, "
        f"{viol}/{len(windows)} windows over SLO, be cpu {result['be_cpu_s']:.0f} s, adjustments {adjustments}, "
        f"lost {summary['lost']}, other cpu {result['other_cpu_cores']:.2f} cores")
    return result


# ---------------------------------------------------------------- report

def percentile(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(1, min(len(v), int(-(-q * len(v) // 1))))
    return v[k - 1]


def report(args, runs, out_dir):
    layout = Layout.of_run(runs[0])
    by = {p: [r for r in runs if r["policy"] == p] for p in args.policies}
    rows = {}
    for p, rs in by.items():
        if not rs:
            continue
        windows = [w for r in rs for w in r["windows"]]
        viol = sum(1 for w in windows if w["p99_us"] / 1000 > args.slo_ms)
        bogo = {}
        for r in rs:
            for k, b in r["bogo"].items():
                t = bogo.setdefault(k, {"ops": 0.0, "seconds": 0.0})
                t["ops"] += b["ops"]
                t["seconds"] += b["seconds"]
        rows[p] = {
            "runs": len(rs),
            "windows": len(windows),
            "violating_windows": viol,
            "violating_share": viol / len(windows) if windows else float("nan"),
            # Over the pooled runs: the mean of the runs' whole-run percentiles, and the worst.
            "p99_ms": sum(r["loadgen"]["p99_us"] for r in rs) / len(rs) / 1000,
            "p999_ms": sum(r["loadgen"]["p999_us"] for r in rs) / len(rs) / 1000,
            "p99_ms_runs": [r["loadgen"]["p99_us"] / 1000 for r in rs],
            "p999_ms_runs": [r["loadgen"]["p999_us"] / 1000 for r in rs],
            "median_window_p99_ms": percentile([w["p99_us"] / 1000 for w in windows], 0.5),
            "bogo_ops_per_s": {k: b["ops"] / b["seconds"] / len(rs) * len(rs) if b["seconds"] else 0.0
                               for k, b in bogo.items()},
            "be_cpu_s_per_run": sum(r["be_cpu_s"] for r in rs) / len(rs),
            "adjustments_per_run": sum(r["adjustments"] for r in rs) / len(rs),
            "lost_requests": sum(r["loadgen"]["lost"] for r in rs),
            "other_cpu_cores": sum(r.get("other_cpu_cores", 0) for r in rs) / len(rs),
        }
    base = rows.get("none")
    for p, row in rows.items():
        if base:
            ratios = [row["bogo_ops_per_s"][k] / base["bogo_ops_per_s"][k]
                      for k in row["bogo_ops_per_s"] if base["bogo_ops_per_s"].get(k)]
            row["be_throughput_index"] = sum(ratios) / len(ratios) if ratios else float("nan")
    meta = {
        "machine": {"nproc": NCPU, "model": lscpu_model(), "kernel": os.uname().release},
        "rate": args.rate, "slo_ms": args.slo_ms, "seconds": args.seconds, "repeats": args.repeats,
        "lc_guarantee_milli": args.lc_guarantee_milli, "be_guarantee_milli": args.be_guarantee_milli,
        "host_cpus": layout.host_cpus, "offhost_cpus": layout.offhost_cpus,
        "static_be_milli": layout.static_be_milli, "reactive_step_milli": layout.reactive_step,
        "reactive_min_milli": layout.reactive_min,
        "timeline": [{"start_s": s, "end_s": e, "kind": k, "args": a} for s, e, k, a in layout.timeline(args.seconds)],
    }
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "policies": rows}, indent=2))
    kinds = sorted({k for row in rows.values() for k in row["bogo_ops_per_s"]})
    lines = [
        f"SLO: p99 of each 1 s window ≤ {args.slo_ms} ms at {args.rate} requests/s; "
        f"{args.repeats} run(s) of {args.seconds:.0f} s per policy; machine: {NCPU} cpus, {lscpu_model()}; "
        f"{layout.describe()}.",
        "",
        "| policy | windows over SLO | p99 (ms, mean of runs) | p999 (ms, mean of runs) | "
        + " | ".join(f"{k} bogo-ops/s" for k in kinds)
        + " | BE throughput index (none = 1) | BE cpu-s per run | adjustments per run | other cpu (cores) |",
        "|---" * (8 + len(kinds)) + "|",
    ]
    for p, r in rows.items():
        lines.append(
            f"| {p} | {r['violating_windows']}/{r['windows']} ({100 * r['violating_share']:.1f} %) | "
            f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | "
            + " | ".join(f"{r['bogo_ops_per_s'].get(k, 0):.1f}" for k in kinds)
            + f" | {r.get('be_throughput_index', float('nan')):.2f} | {r['be_cpu_s_per_run']:.0f} | "
            f"{r['adjustments_per_run']:.0f} | {r['other_cpu_cores']:.2f} |")
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        plot(args, runs, out_dir)
    except ImportError as e:
        log(f"no plots ({e}); install scripts/requirements-eval.txt")


def lscpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "?")
    except OSError:
        return "?"


def plot(args, runs, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"cpu": "tab:red", "cache": "tab:orange", "mem": "tab:purple", "io": "tab:brown"}
    for policy in args.policies:
        rs = [r for r in runs if r["policy"] == policy]
        if not rs:
            continue
        r = rs[0]
        layout = Layout.of_run(r)
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, dpi=80)
        t = [w["second"] for w in r["windows"]]
        ax1.plot(t, [w["p99_us"] / 1000 for w in r["windows"]], lw=1, label="p99 per 1 s window")
        ax1.axhline(args.slo_ms, color="k", ls="--", lw=1, label=f"SLO {args.slo_ms} ms")
        ax1.set_yscale("log")
        ax1.set_ylabel("latency (ms)")
        ax1.legend(loc="upper right", fontsize=8)
        viol = sum(1 for w in r["windows"] if w["p99_us"] / 1000 > args.slo_ms)
        ax1.set_title(f"{policy} (run {r['rep']}): {viol}/{len(r['windows'])} windows over SLO, "
                      f"p99 {r['loadgen']['p99_us']/1000:.2f} ms, p999 {r['loadgen']['p999_us']/1000:.2f} ms",
                      fontsize=10)
        for s, e, kind, _ in layout.timeline(args.seconds):
            ax1.axvspan(s, e, color=colours[kind], alpha=0.08)
        st = [s["t"] for s in r["samples"]]
        ax2.plot(st, [s["lc_cpu_milli"] for s in r["samples"]], lw=1, color="tab:blue", label="redis cpu used")
        ax2.plot(st, [s["be_cpu_milli"] for s in r["samples"]], lw=1, color="tab:gray", label="best-effort cpu used")
        ax2.plot(st, [s.get("other_cpu_milli", 0) for s in r["samples"]], lw=0.8, ls=":", color="tab:olive",
                 label="rest of the host (not the experiment)")

        def total_be_quota(s):
            q = s["quota_milli"]
            parent = q.get("be")
            kids = [q.get(f"be/{k}") for k in BE_KINDS]
            kid_sum = None if any(k is None for k in kids) else sum(kids)
            cands = [x for x in (parent, kid_sum) if x is not None]
            return min(cands) if cands else layout.host_milli
        ax2.step(st, [total_be_quota(s) for s in r["samples"]], where="post", color="k", lw=1.2,
                 label="best-effort cpu allowed")
        lcq = [s["quota_milli"].get("lc") for s in r["samples"]]
        if any(q is not None for q in lcq):
            ax2.step(st, [q if q is not None else layout.host_milli for q in lcq], where="post", color="tab:green",
                     lw=1.2, label="redis cpu allowed")
        for s, e, kind, _ in layout.timeline(args.seconds):
            ax2.axvspan(s, e, color=colours[kind], alpha=0.08)
        ax2.set_ylim(0, layout.host_milli * 1.05)
        ax2.set_ylabel("millicores")
        ax2.set_xlabel("seconds (shading: cpu red, cache orange, memory bw purple, io brown)")
        ax2.legend(loc="upper right", fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out_dir / f"timeline-{policy}.png")
        plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Defaults are applied after parsing: with --report-only, what the runs recorded is the default.
    defaults = {"seconds": 150.0, "repeats": 2, "rate": 5000, "slo_ms": 5.0}
    ap.add_argument("--seconds", type=float, help="length of one run's timeline (default 150)")
    ap.add_argument("--repeats", type=int, help="repetitions of every policy (default 2)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--rate", type=int, help="redis requests per second, open loop (default 5000)")
    ap.add_argument("--slo-ms", type=float, help="p99 latency bound of a 1 s window (default 5)")
    ap.add_argument("--lc-guarantee-milli", type=int, default=500)
    ap.add_argument("--be-guarantee-milli", type=int, default=50)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bin-dir")
    ap.add_argument("--nats-server")
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--host-cpus", default="auto",
                    help="the measured host's cpus: 'auto' (all but the first, which then runs the control "
                         "plane and the load generator), 'all' (everything shares every cpu) or a list like 1 or 2,3")
    ap.add_argument("--be-cpu-enforcement", choices=["idle", "share", "cap"],
                    help="how entente's agent holds the antagonists' cpu (default: the agent's default for "
                         "best-effort work)")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rebuild tables and plots from --out")
    args = ap.parse_args()
    args.policies = [p for p in args.policies.split(",") if p]
    for p in args.policies:
        if p not in POLICIES + ABLATIONS:
            ap.error(f"unknown policy {p}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        runs = [json.loads(f.read_text()) for f in sorted(args.out.glob("run-*.json"))]
        if not runs:
            ap.error(f"--report-only: {args.out} holds no run-*.json")
        # What the runs were recorded with, unless asked otherwise (e.g. another --slo-ms).
        defaults = {"seconds": runs[0]["seconds"], "repeats": max(r["rep"] for r in runs),
                    "rate": runs[0]["rate"], "slo_ms": runs[0]["slo_ms"]}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.report_only:
        report(args, runs, args.out)
        return
    try:
        args.layout = Layout.parse(args.host_cpus)
    except ValueError as e:
        ap.error(str(e))
    if not (args.bin_dir and args.nats_server and args.model_dir):
        ap.error("--bin-dir, --nats-server and --model-dir are needed to run (not for --report-only)")
    if os.geteuid() != 0:
        sys.exit("the experiment needs root (cgroups)")
    for f in args.out.glob("run-*.json"):
        f.unlink()
    # This harness samples and paces the runs: it is part of the instrument, off the host.
    os.sched_setaffinity(0, args.layout.offhost_cpus)
    log(f"layout: {args.layout.describe()}")
    runs = []
    started = time.time()
    try:
        for rep in range(1, args.repeats + 1):
            order = args.policies if rep % 2 else list(reversed(args.policies))
            for policy in order:
                runs.append(run_once(args, policy, rep, args.out))
    finally:
        remove_cgroups()
    log(f"all runs done in {time.time() - started:.0f} s")
    report(args, runs, args.out)


if __name__ == "__main__":
    main()
