#!/usr/bin/env python3
"""The scale run of docs/EVALUATION.md: how round time, decision latency and each component's cpu
grow as simulated hosts are added (issue #8). Run through `scripts/scale-run.sh`, which builds
the release binaries first.

For each host count it starts a fresh nats-server (JetStream), three `entente-arbiter`
replicas, one `entente-predictor` with the shipped model, and the load generator
`arbiter/examples/round_load.rs --telemetry`, which registers N hosts x W workloads, then every
round publishes one telemetry sample and one bid per workload and measures the decisions and
forecasts that come back. Every 0.5 s it reads utime+stime of each process from /proc/<pid>/stat;
the cpu of a component is what it used between the generator's first and last measured round,
in cores. Writes scale.json, scale.md and scale.png.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import free_port, log

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return None


def run_point(args, hosts):
    work = Path(tempfile.mkdtemp(prefix=f"scale-{hosts}-"))
    port = free_port()
    nats_url = f"nats://127.0.0.1:{port}"
    (work / "nats.conf").write_text(f'listen: 127.0.0.1:{port}\nmax_payload: 16MB\njetstream {{ store_dir: "{work}/js" }}\n')
    procs = {}

    def spawn(name, argv):
        procs[name] = subprocess.Popen(argv, stdout=open(work / f"{name}.log", "w"), stderr=subprocess.STDOUT)

    samples = []  # (unix s, {name: cpu s})
    stop_sampling = threading.Event()

    def sampler():
        while not stop_sampling.is_set():
            samples.append((time.time(), {n: cpu_seconds(p.pid) for n, p in list(procs.items())}))
            time.sleep(0.5)

    try:
        spawn("nats", [args.nats_server, "-c", str(work / "nats.conf")])
        time.sleep(0.5)
        for n in (1, 2, 3):
            spawn(f"arbiter-{n}", [f"{args.bin_dir}/entente-arbiter", "run", "--node-id", str(n), "--peers", "1,2,3",
                                   "--data-dir", str(work / f"arbiter-{n}"), "--nats", nats_url,
                                   "--round-ms", str(args.round_ms)])
        spawn("predictor", [f"{args.bin_dir}/entente-predictor", "run", "--nats", nats_url,
                            "--model-dir", args.model_dir])
        threading.Thread(target=sampler, daemon=True).start()
        gen = subprocess.Popen([f"{args.bin_dir}/examples/round_load", "--nats", nats_url, "--hosts", str(hosts),
                                "--workloads", str(args.workloads), "--rounds", str(args.rounds), "--telemetry"],
                               stdout=subprocess.PIPE, stderr=open(work / "generator.log", "w"))
        procs["generator"] = gen
        out, _ = gen.communicate(timeout=args.timeout)
        summary = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        stop_sampling.set()
        time.sleep(0.6)
        for name, p in procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    # Leader: the arbiter that used most cpu in the window (only the leader clears rounds).
    t0, t1 = summary["measure_start_unix_ms"] / 1000, summary["measure_end_unix_ms"] / 1000

    def at(t, name):
        best = None
        for ts, cpu in samples:
            if cpu.get(name) is not None and (best is None or abs(ts - t) < abs(best[0] - t)):
                best = (ts, cpu[name])
        return best

    cores = {}
    for name in procs:
        a, b = at(t0, name), at(t1, name)
        if a and b and b[0] > a[0]:
            cores[name] = (b[1] - a[1]) / (b[0] - a[0])
    arbiters = sorted((cores.get(f"arbiter-{n}", 0.0), n) for n in (1, 2, 3))
    point = {
        "hosts": hosts,
        "workloads_per_host": args.workloads,
        **summary,
        "cpu_cores": {
            "nats": cores.get("nats"),
            "arbiter_leader": arbiters[-1][0],
            "arbiter_followers": arbiters[0][0] + arbiters[1][0],
            "predictor": cores.get("predictor"),
            "generator": cores.get("generator"),
        },
    }
    if args.keep_logs:
        shutil.copytree(work, Path(args.out) / f"logs-{hosts}", ignore=shutil.ignore_patterns("js", "arbiter-?"),
                        dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    c = point["cpu_cores"]
    log(f"{hosts} hosts: {summary['rounds_per_second']:.2f} rounds/s, decision p50 "
        f"{summary['decision_latency_ms_p50']:.0f} ms p99 {summary['decision_latency_ms_p99']:.0f} ms, "
        f"forecasts/s {summary['forecasts_per_second']:.0f}, cpu leader {c['arbiter_leader']:.2f} "
        f"nats {c['nats']:.2f} predictor {c['predictor']:.2f} generator {c['generator']:.2f}")
    return point


def report(args, points):
    out = Path(args.out)
    (out / "scale.json").write_text(json.dumps(points, indent=2))
    lines = [
        f"{args.workloads} workloads per host, {args.rounds} rounds of {args.round_ms} ms per point; cpu in cores "
        f"(machine: {os.cpu_count()} cpus).",
        "",
        "| hosts | workloads | rounds/s | after deadline p50 / p99 (ms) | last decision of a round p50 / p99 (ms) "
        "| host's last bid to its decision p50 / p99 (ms) | decided before deadline "
        "| forecasts/s (hosts forecast) | forecast age p50 (ms) | cpu: arbiter leader | followers | nats | predictor "
        "| generator |",
        "|---" * 14 + "|",
    ]
    for p in points:
        c = p["cpu_cores"]
        f = lambda x: "–" if x is None else f"{x:.2f}"
        lines.append(
            f"| {p['hosts']} | {p['hosts'] * p['workloads_per_host']} | {p['rounds_per_second']:.2f} | "
            f"{p['decision_latency_ms_p50']:.0f} / {p['decision_latency_ms_p99']:.0f} | "
            f"{p['last_decision_of_round_ms_p50']:.0f} / {p['last_decision_of_round_ms_p99']:.0f} | "
            f"{p['bid_to_decision_ms_p50']:.0f} / {p['bid_to_decision_ms_p99']:.0f} | "
            f"{100 * p['decided_before_deadline_share']:.0f} % | "
            f"{p['forecasts_per_second']:.0f} ({p['hosts_forecast']}) | {p['forecast_age_ms_p50']:.0f} | "
            f"{f(c['arbiter_leader'])} | {f(c['arbiter_followers'])} | {f(c['nats'])} | {f(c['predictor'])} | "
            f"{f(c['generator'])} |")
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        log("no plot: matplotlib missing")
        return
    hs = [p["hosts"] for p in points]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    a1.plot(hs, [max(p["bid_to_decision_ms_p50"], 0.5) for p in points], "o-", label="host's last bid to decision p50")
    a1.plot(hs, [max(p["bid_to_decision_ms_p99"], 0.5) for p in points], "o-", label="host's last bid to decision p99")
    a1.plot(hs, [max(p["decision_latency_ms_p99"], 0.5) for p in points], "x-", label="after the deadline p99")
    a1.plot(hs, [max(p["last_decision_of_round_ms_p50"], 0.5) for p in points], "s--", label="last decision of round p50")
    a1.plot(hs, [1000 / max(p["rounds_per_second"], 1e-9) for p in points], "^:", label="round time (1/rounds per s)")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("hosts")
    a1.set_ylabel("ms")
    a1.legend(fontsize=8)
    a1.set_title("decision latency (0 plotted at 0.5)")
    for key, label in [("arbiter_leader", "arbiter leader"), ("arbiter_followers", "2 followers"),
                       ("nats", "nats-server"), ("predictor", "predictor"), ("generator", "load generator")]:
        a2.plot(hs, [p["cpu_cores"][key] or 0 for p in points], "o-", label=label)
    a2.axhline(os.cpu_count(), color="k", ls="--", lw=1, label="machine")
    a2.set_xscale("log")
    a2.set_xlabel("hosts")
    a2.set_ylabel("cores")
    a2.legend(fontsize=8)
    a2.set_title("cpu per component")
    for ax in (a1, a2):
        ax.set_xticks(hs)
        ax.set_xticklabels([str(h) for h in hs])
        ax.minorticks_off() if ax is a2 else None
    a1.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    fig.tight_layout()
    fig.savefig(out / "scale.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="250,500,1000,2000,4000")
    ap.add_argument("--workloads", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--round-ms", type=int, default=1000)
    ap.add_argument("--timeout", type=int, default=600, help="seconds one point may take")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bin-dir")
    ap.add_argument("--nats-server")
    ap.add_argument("--model-dir")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rebuild the table and plot from --out")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.report_only:
        report(args, json.loads((Path(args.out) / "scale.json").read_text()))
        return
    if not (args.bin_dir and args.nats_server and args.model_dir):
        ap.error("--bin-dir, --nats-server and --model-dir are needed to run (not for --report-only)")
    points = []
    for h in [int(x) for x in args.hosts.split(",")]:
        try:
            points.append(run_point(args, h))
        except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError, KeyError) as e:
            log(f"{h} hosts: no result ({e!r}); stopping the sweep here")
            break
        report(args, points)


if __name__ == "__main__":
    main()
