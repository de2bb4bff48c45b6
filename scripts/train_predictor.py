#!/usr/bin/env python3
"""Trains, exports and evaluates the predictor's model from the committed contention data.

Why: the predictor service (Rust, tract) serves an ONNX model whose contract is
`predictor/MODEL_INTERFACE.md`. This script is the one command that rebuilds everything on the
Python side of that contract from `predictor/data/` (written by `scripts/collect_contention.py`):

  * the features of every telemetry sample, computed exactly as the interface table says;
  * windows of T=8 samples for every workload of one host (experiment), with next-interval usage
    and the measured slowdown of the next interval as targets;
  * a small transformer encoder (attention across time per workload, then across the workloads
    of one host under the `present` mask), with the normalisation constants baked into the graph
    and the counterfactual `slowdown_without` matrix computed inside the graph;
  * the ONNX export (opset 17, fixed shapes), checked against PyTorch with onnxruntime;
  * the sidecar, `reference.json` (a held-out input and its PyTorch outputs) and the evaluation on
    held-out experiments against baselines, written to `predictor/model/metrics.json`,
    `predictor/MODEL_CARD.md` and `docs/BENCHMARKS.md`.

Seeded: the same data and the same seed give the same model and the same table.
"""

import argparse
import csv
import datetime
import gzip
import hashlib
import json
import math
import os
import random
import re
import sys
from collections import defaultdict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

WINDOW = 8
SLOTS = 32
INTERVAL_MS = 1000
INTERFACE = 3
MIB = float(1 << 20)
FEATURE_NAMES = [
    "cpu_cores", "memory_log_mib", "disk_read_log_mibps", "disk_write_log_mibps", "net_rx_log_mibps",
    "net_tx_log_mibps", "psi_cpu_some", "psi_cpu_full", "psi_memory_some", "psi_memory_full", "psi_io_some",
    "psi_io_full", "psi_present", "task_clock_cores", "context_switches_log_k", "page_faults_log_k", "ipc",
    "llc_mpki", "hardware_counters_present", "run_delay_cores", "throttled_cores", "cpu_wait_share",
    "scheduler_present", "cpu_cap_cores", "cpu_quota_present", "cpu_headroom_cores", "cpu_demand_cores",
    "uncontended_cpu_ratio_log",
]
NUM_FEATURES = len(FEATURE_NAMES)
USAGE = 6
EWMA_ALPHA = 0.5
# Held-out experiments: every fourth one, never used to fit the model or any baseline.
HELD_OUT_EVERY = 4


def fnum(v):
    """A CSV cell as a float, or None where the sample had null."""
    return None if v in ("", None) else float(v)


NUMERIC_SAMPLE_COLUMNS = [
    "cpu_millicores", "memory_bytes", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps",
    "psi_cpu_some", "psi_cpu_full", "psi_memory_some", "psi_memory_full", "psi_io_some", "psi_io_full",
    "instructions", "cycles", "llc_misses", "task_clock_ms", "context_switches", "page_faults",
    "run_delay_ms", "throttled_ms", "cpu_quota_millicores", "cpu_cap_millicores",
]
# The least cpu use the uncontended ratio divides by (cores), as in predictor/src/features.rs.
MIN_RATIO_CORES = 0.01


def features_of(row):
    """The 28 features of one sample, per the table in predictor/MODEL_INTERFACE.md."""
    z = lambda v: 0.0 if v is None or not math.isfinite(v) else v
    lg = lambda v, scale: math.log1p(max(z(v), 0.0) / scale)
    g = {k: fnum(row.get(k)) for k in NUMERIC_SAMPLE_COLUMNS}
    instr, cycles, llc = g.get("instructions"), g.get("cycles"), g.get("llc_misses")
    ipc = instr / cycles if instr is not None and cycles is not None and cycles > 0 else 0.0
    mpki = llc / (instr / 1000.0) if llc is not None and instr is not None and instr > 0 else 0.0
    # Waiting for a cpu that others hold: run delay less the workload's own quota throttling.
    cpu = max(z(g["cpu_millicores"]), 0.0) / 1000.0
    contention_wait = max(z(g["run_delay_ms"]) - z(g["throttled_ms"]), 0.0) / 1000.0
    wait_share = contention_wait / (cpu + contention_wait) if cpu + contention_wait > 0 else 0.0
    # What it would run alone: what it ran and waited for, up to its cap (quota or cpus).
    cap_ms = g["cpu_cap_millicores"]
    cap = cap_ms / 1000.0 if cap_ms is not None and math.isfinite(cap_ms) and cap_ms > 0 else None
    ran = max(cpu, MIN_RATIO_CORES)
    alone = cpu + contention_wait if cap is None else min(cpu + contention_wait, cap)
    return [
        z(g["cpu_millicores"]) / 1000.0,
        lg(g["memory_bytes"], MIB),
        lg(g["disk_read_bps"], MIB),
        lg(g["disk_write_bps"], MIB),
        lg(g["net_rx_bps"], MIB),
        lg(g["net_tx_bps"], MIB),
        z(g["psi_cpu_some"]) / 100.0,
        z(g["psi_cpu_full"]) / 100.0,
        z(g["psi_memory_some"]) / 100.0,
        z(g["psi_memory_full"]) / 100.0,
        z(g["psi_io_some"]) / 100.0,
        z(g["psi_io_full"]) / 100.0,
        0.0 if row["psi_source"] == "unavailable" else 1.0,
        z(g["task_clock_ms"]) / 1000.0,
        lg(g["context_switches"], 1000.0),
        lg(g["page_faults"], 1000.0),
        ipc,
        mpki,
        1.0 if row["counter_source"] == "hardware" else 0.0,
        z(g["run_delay_ms"]) / 1000.0,
        z(g["throttled_ms"]) / 1000.0,
        wait_share,
        0.0 if g["run_delay_ms"] is None else 1.0,
        0.0 if cap is None else cap,
        0.0 if g["cpu_quota_millicores"] is None else 1.0,
        0.0 if cap is None else cap - cpu,
        cpu + z(g["run_delay_ms"]) / 1000.0,
        math.log(max(alone, ran) / ran),
    ]


def read_csv_gz(path):
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


class Host:
    """One experiment: its workloads' feature series and the measured slowdown per segment."""

    def __init__(self, experiment, samples, segments):
        self.experiment = experiment
        self.workloads = sorted({r["workload"] for r in samples})
        kind_of = {r["workload"]: r["kind"] for r in samples}
        self.kinds = [kind_of[w] for w in self.workloads]
        ticks = sorted({int(r["t"]) for r in samples})
        self.ticks = ticks
        index = {t: i for i, t in enumerate(ticks)}
        self.x = np.zeros((len(self.workloads), len(ticks), NUM_FEATURES), dtype=np.float32)
        for r in samples:
            self.x[self.workloads.index(r["workload"]), index[int(r["t"])]] = features_of(r)
        self.load = np.zeros(len(ticks), dtype=np.float32)
        for r in samples:
            self.load[index[int(r["t"])]] = float(r["loadavg1"])
        # Per workload: the segments as (start, end, slowdown or None when inactive/unlabelled,
        # segment id), and the ids of its solo segments.
        self.segments = defaultdict(list)
        self.solo_segments = defaultdict(set)
        for s in segments:
            sd = fnum(s["slowdown"]) if s["active"] == "1" else None
            self.segments[s["workload"]].append((float(s["start_t"]), float(s["end_t"]), sd, int(s["segment"])))
            if s["solo"] == "1":
                self.solo_segments[s["workload"]].add(int(s["segment"]))

    def slowdown_over(self, workload, t0, t1):
        """The measured slowdown of the segment holding the middle of (t0, t1], if labelled."""
        mid = (t0 + t1) / 2
        for start, end, sd, _ in self.segments[workload]:
            if start <= mid < end:
                return sd
        return None

    def segment_at(self, workload, t):
        mid = t - 0.5
        for start, end, _, seg in self.segments[workload]:
            if start <= mid < end:
                return seg
        return -1

    def last_measured(self, workload, t):
        """Slowdowns measured in segments that ended by tick t, oldest first: all a real
        system could know at t (a segment's throughput is known only once it ends)."""
        return [sd for start, end, sd, _ in sorted(self.segments[workload]) if end <= t and sd is not None]


def load_hosts(data_dir):
    """The experiments of a data set, and its segment rows as read (for the data summary)."""
    for name in ["samples.csv.gz", "segments.csv.gz", "collection.json"]:
        if not os.path.isfile(os.path.join(data_dir, name)):
            sys.exit(f"{data_dir} has no {name}: not a data set written by scripts/collect_contention.py")
    samples = read_csv_gz(os.path.join(data_dir, "samples.csv.gz"))
    segments = read_csv_gz(os.path.join(data_dir, "segments.csv.gz"))
    if not samples:
        sys.exit(f"{data_dir}/samples.csv.gz holds no samples")
    by_exp = defaultdict(list)
    seg_by_exp = defaultdict(list)
    for r in samples:
        by_exp[int(r["experiment"])].append(r)
    for s in segments:
        seg_by_exp[int(s["experiment"])].append(s)
    return [Host(e, by_exp[e], seg_by_exp[e]) for e in sorted(by_exp)], segments


def make_windows(hosts, slots):
    """Every host window: features [slots, T, F], present [slots], targets, and what the
    baselines need. A window ends at a tick t and its targets are at t + 1."""
    out = defaultdict(list)
    for h in hosts:
        n = len(h.workloads)
        if n > slots:
            raise ValueError(f"experiment {h.experiment} has {n} workloads, more than {slots} slots")
        for i in range(len(h.ticks) - 1):
            t = h.ticks[i]
            x = np.zeros((slots, WINDOW, NUM_FEATURES), dtype=np.float32)
            idx = [max(j, 0) for j in range(i - WINDOW + 1, i + 1)]  # left-pad with the oldest
            x[:n] = h.x[:, idx]
            present = np.zeros(slots, dtype=np.float32)
            present[:n] = 1
            usage_next = np.zeros((slots, USAGE), dtype=np.float32)
            usage_next[:n] = h.x[:, i + 1, :USAGE]
            sd = np.ones(slots, dtype=np.float32)
            sd_mask = np.zeros(slots, dtype=np.float32)
            last_sd = np.ones(slots, dtype=np.float32)
            ewma_sd = np.ones(slots, dtype=np.float32)
            change = np.zeros(slots, dtype=np.float32)
            solo = np.zeros(slots, dtype=np.float32)
            kinds = np.array(h.kinds + [""] * (slots - n))
            for k, w in enumerate(h.workloads):
                v = h.slowdown_over(w, t, h.ticks[i + 1])
                if v is not None and v > 0:
                    sd[k], sd_mask[k] = v, 1
                past = h.last_measured(w, t)
                if past:
                    last_sd[k] = past[-1]
                    e = 1.0
                    for p in past:
                        e = EWMA_ALPHA * p + (1 - EWMA_ALPHA) * e
                    ewma_sd[k] = e
                next_segment = h.segment_at(w, h.ticks[i + 1])
                change[k] = float(h.segment_at(w, t) != next_segment)
                solo[k] = float(next_segment in h.solo_segments[w])
            out["x"].append(x)
            out["present"].append(present)
            out["usage"].append(usage_next)
            out["sd"].append(sd)
            out["sd_mask"].append(sd_mask)
            out["last_sd"].append(last_sd)
            out["ewma_sd"].append(ewma_sd)
            out["change"].append(change)
            out["solo"].append(solo)
            out["kind"].append(kinds)
            out["experiment"].append(h.experiment)
            out["load"].append(h.load[i])
    return {k: np.array(v) for k, v in out.items()}


# --- the model ---

class Attention(nn.Module):
    """Multi-head self-attention over the middle axis of [B, L, d], keys masked additively.
    Written with matmul and softmax only, so the ONNX graph uses operators every runtime has."""

    def __init__(self, d, heads):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x, key_bias=None):
        b, l, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.reshape(b, l, self.h, self.dh).transpose(1, 2)
        k = k.reshape(b, l, self.h, self.dh).transpose(1, 2)
        v = v.reshape(b, l, self.h, self.dh).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(self.dh))
        if key_bias is not None:
            scores = scores + key_bias[:, None, None, :]
        att = torch.softmax(scores, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, l, d)
        return self.out(y)


class Block(nn.Module):
    """A pre-norm transformer encoder layer."""

    def __init__(self, d, heads, ff, dropout):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.att = Attention(d, heads)
        # ff = 0: attention only, for the cross-workload stage that serving runs 33 times.
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(approximate="tanh"), nn.Linear(ff, d)) if ff else None
        self.drop = nn.Dropout(dropout)  # training only; the exported graph is in eval mode

    def forward(self, x, key_bias=None):
        x = x + self.drop(self.att(self.n1(x), key_bias))
        return self.feed_forward(x)

    def feed_forward(self, x):
        if self.ff is None:
            return x
        return x + self.drop(self.ff(self.n2(x)))


class Predictor(nn.Module):
    """Per-workload projection and attention across time, pooling, then attention across the
    host's workloads (no position across slots), with heads for usage and slowdown."""

    def __init__(self, mean, std, d=32, heads=2, ff=64, dropout=0.1, input_noise=0.0, cross_ff=64):
        super().__init__()
        self.input_noise = input_noise
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.proj = nn.Linear(NUM_FEATURES, d)
        self.time_pos = nn.Parameter(torch.zeros(WINDOW, d))
        self.temporal = Block(d, heads, ff, dropout)
        self.pool = nn.Linear(2 * d, d)
        self.cross = Block(d, heads, cross_ff, dropout)
        self.norm = nn.LayerNorm(d)
        self.others_proj = nn.Linear(d, d)
        self.usage_head = nn.Linear(3 * d, USAGE)
        self.slowdown_head = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(approximate="tanh"), nn.Linear(d, 1))
        # Start from "next usage = last usage", the strong baseline, and learn corrections to it.
        nn.init.zeros_(self.usage_head.weight)
        nn.init.zeros_(self.usage_head.bias)

    def encode(self, x):
        """x [B, N, T, F] raw features -> per-workload summaries [B, N, d]."""
        b, n, t, f = x.shape
        z = (x - self.mean) / self.std
        if self.training and self.input_noise > 0:
            # Jitter in units of each feature's spread: a few experiments are easy to memorise
            # by their exact levels, and the noise makes the model rely on coarser patterns.
            z = z + self.input_noise * torch.randn_like(z)
        h = self.proj(z.reshape(b * n, t, f)) + self.time_pos
        h = self.temporal(h)
        pooled = torch.cat([h[:, -1], h.mean(dim=1)], dim=-1)
        return self.pool(pooled).reshape(b, n, -1)

    def across(self, h, present):
        """h [B, N, d], present [B, N] -> cross-workload summaries [B, N, 3d]: the workload's own
        summary, what attention to the host's workloads gives it, and the sum over its present
        co-runners. Attention averages, so it cannot tell two co-runners from four; contention
        grows with the total demand, which the sum carries."""
        key_bias = (1.0 - present) * -1e4
        c = self.norm(self.cross(h, key_bias))
        mask = present.unsqueeze(-1)
        others = (h * mask).sum(dim=1, keepdim=True) - h * mask
        return torch.cat([h, c, self.others_proj(others)], dim=-1)

    def slowdown(self, c):
        # In log space: a co-located workload can also run *faster* than alone (on an otherwise
        # idle virtual machine, busy neighbours keep the vcpus awake, and wake-up-bound work such
        # as context switching or a request loop gains), so the output is not floored at 1.
        # The clamp keeps it within 0.05..150, far beyond any label, and finite.
        return torch.exp(self.slowdown_head(c).squeeze(-1).clamp(-3.0, 5.0))

    def usage(self, c, x):
        # A residual on the last observed usage, scaled by the usage features' spread.
        return x[:, :, -1, :USAGE] + self.usage_head(c) * self.std[:USAGE]

    def forward(self, x, present):
        """Training form: x [B, N, T, F], present [B, N] -> usage [B, N, 6], slowdown [B, N]."""
        c = self.across(self.encode(x), present)
        return self.usage(c, x), self.slowdown(c)


def untrained_predictor(mean, std, args):
    """A `Predictor` with the model settings of `args`, to train or to load weights into."""
    return Predictor(mean, std, d=args.d_model, dropout=args.dropout, input_noise=args.input_noise,
                     cross_ff=args.cross_ff)


def train_member(tr, mean, std, args, seed):
    """Trains one model of the ensemble on the training windows, from its own seed."""
    torch.manual_seed(seed)
    model = untrained_predictor(mean, std, args)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    tx = {k: torch.tensor(v) for k, v in tr.items() if k in ("x", "present", "usage", "sd", "sd_mask")}
    n_train = tx["x"].shape[0]
    ustd = torch.tensor(std[:USAGE])
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(n_train, generator=gen)
        total = 0.0
        for i in range(0, n_train, 64):
            b = perm[i:i + 64]
            usage, sd = model(tx["x"][b], tx["present"][b])
            pres = tx["present"][b]
            # L1, the error the table reports: next usage is often "same" or "jump", and a squared
            # loss would settle between the two, worse than either.
            u_err = torch.abs((usage - tx["usage"][b]) / ustd)
            u_loss = (u_err.mean(-1) * pres).sum() / pres.sum()
            m = tx["sd_mask"][b]
            s_err = args.log_weight * torch.abs(torch.log(sd) - torch.log(tx["sd"][b]))
            if args.rel_weight:
                # The relative error itself (what MAPE averages): under the same uncertainty in
                # log space it prefers the lower forecast, as MAPE does.
                s_err = s_err + args.rel_weight * torch.abs(sd / tx["sd"][b] - 1.0)
            s_loss = (s_err * m).sum() / m.sum().clamp(min=1)
            loss = u_loss + args.slowdown_weight * s_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        if epoch % 40 == 0 or epoch == args.epochs - 1:
            print(f"seed {seed} epoch {epoch}: loss {total / n_train:.4f}", flush=True)
    return model.eval()


def load_weights(path, mean, std, args):
    """The ensemble a run with the same model settings trained and saved (`weights.pt`); its own
    normalisation constants replace `mean` and `std`."""
    model = Ensemble([untrained_predictor(mean, std, args) for _ in range(args.ensemble)])
    try:
        model.load_state_dict(torch.load(path, weights_only=True))
    except (OSError, RuntimeError, ValueError) as e:
        sys.exit(f"cannot start from the weights in {path} (model settings --d-model {args.d_model}, "
                 f"--cross-ff {args.cross_ff}, --ensemble {args.ensemble}): {e}")
    return model


class Ensemble(nn.Module):
    """The mean of several independently seeded models: on data this small and noisy the
    average forecast is steadier than any one member's."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x, present):
        outs = [m(x, present) for m in self.members]
        return (torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0))


def rms_normalize(x, eps):
    """`normalize` of a vector that is already centred: the mean is zero, so only the scaling is
    left (tract runs this as one fused root-mean-square norm)."""
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def normalize(x, eps):
    """Layer norm over the last axis without its scale and shift (folded into what follows)."""
    return rms_normalize(x - x.mean(-1, keepdim=True), eps)


def fold_norm(linear, norm):
    """(weight, bias) of `linear` applied after `norm`'s scale and shift, so that
    `linear(norm(x)) == normalize(x) @ weight.T + bias`."""
    return linear.weight * norm.weight[None, :], linear.bias + linear.weight @ norm.bias


class ServingMember(nn.Module):
    """One trained `Predictor` in serving form: for one host it computes what `Predictor.forward`
    computes on the host (row 0) and on the host with each slot j removed (row 1 + j), arranged
    for what a CPU runtime pays for. In tract, a softmax or a broadcast multiply over the 33 rows
    costs as much as the matrix products around it, so:

    * the time encoder and the cross layer's queries, keys, values and scores do not depend on
      which slot is removed: they run once;
    * the cross layer's scores are exponentiated once (absent keys at exactly 0); removing key j
      zeroes its row of the values, and one batched matmul of the exponentials with the values
      and a column of ones gives every row's numerator and denominator: a softmax without a
      softmax per removal, and no cancellation (nothing is subtracted);
    * the layer norms' scale and shift are folded into the linear layers that read them, and the
      co-runner-sum projection into the heads;
    * the cross layer's residual stream is kept centred: centring is linear, so it is folded into
      the weights of every term added to the stream (the attention's output projection and the
      feed-forward's last layer, C W with C = I - 1/d) and applied to the residual h once per
      slot. The two norms over every row and slot then have no mean to take and subtract (in
      tract, a mean and a subtraction over [33, 32, d] per norm, about a tenth of a run);
    * slot i's co-runner sum with slot j removed is S - h_i - h_j (S: the sum over present slots),
      computed per slot and per row ([N, d] and [1 + N, d], not [1 + N, N, d]): the heads' weights
      for them run once per slot or row, and only the part read from c runs over every row and
      slot (the three parts as columns of one product over all rows cost 200 us of a 1.05 ms run;
      the cross attention's residual h is likewise added per slot, not multiplied by I);
    * both attentions exponentiate their scores as they are, without subtracting each row's
      maximum, and the temporal one sums each row by a product with a column of ones: tract's
      softmax over rows of 8 cost 175 us of a 1.24 ms run, and its row maximum 19 us. That is
      safe because every query and key is read from a layer-normed vector, whose length is
      fixed, so the scores are bounded by the weights alone; `attention_score_bounds` computes
      the bound and the export refuses a model whose exponentials could overflow.

    Entry [1 + j, j] (slot j's own forecast with itself removed) is meaningless and differs from
    the training form; the service never reads it. `main` checks every other entry against
    `Predictor.forward` with the slot's present flag cleared before exporting."""

    def __init__(self, model, slots):
        super().__init__()
        self.model = model
        d = model.norm.normalized_shape[0]
        att = model.cross.att
        tb = model.temporal
        with torch.no_grad():
            # The input normalisation, the bias and the time position folded into one product:
            # [x, one-hot time step] @ [W / std, (time_pos + b - W mean / std)^T]^T.
            proj_w = model.proj.weight / model.std[None, :]
            proj_b = model.proj.bias - proj_w @ model.mean
            self.register_buffer("proj_w", torch.cat([proj_w, (model.time_pos + proj_b).t()], dim=1))
            window = model.time_pos.shape[0]
            self.register_buffer("time_onehot", torch.eye(window)[None].expand(slots, -1, -1).contiguous())
            # The temporal attention, every head in one product per workload: the keys and the
            # values repeated once per head and masked block-diagonally, so that [T, d] queries
            # times [d, H x T] keys give each head's scores side by side, and [T, H x T] weights
            # times [H x T, d] values give the heads' outputs already concatenated. tract runs a
            # batched product per workload and head at a fixed cost each (plus packing), so
            # halving their number, and dropping the heads' transposes, is what pays. The masks
            # are spelled out per slot so that they multiply same-shaped tensors.
            heads = tb.att.h
            head_of_column = torch.arange(d) // tb.att.dh
            head_of_key = torch.arange(heads * window) // window
            block = (head_of_column[:, None] == head_of_key[None, :]).float()  # [d, H x T]
            self.register_buffer("t_key_mask", block[None].expand(slots, -1, -1).contiguous())
            self.register_buffer("t_value_mask", block.t()[None].expand(slots, -1, -1).contiguous())
            # Each head's row sums, repeated over its columns: a product with a block of ones.
            self.register_buffer("t_head_sums", (head_of_key[:, None] == head_of_key[None, :]).float())
            # The temporal layer's norms folded into its query-key-value and feed-forward inputs,
            # and the scores' scale 1 / sqrt(d_head) into the queries.
            w, b = fold_norm(tb.att.qkv, tb.n1)
            scale = torch.ones(3 * d)
            scale[:d] = 1.0 / math.sqrt(tb.att.dh)
            self.register_linear("t_qkv", w * scale[:, None], b * scale)
            if tb.ff is not None:
                self.register_linear("t_ff0", *fold_norm(tb.ff[0], tb.n2))
            # Row 0 removes nothing, row 1 + j removes slot j: the mask on the values (and their
            # column of ones), spelled out in full so that the runtime multiplies same-shaped
            # tensors instead of broadcasting.
            keep = torch.cat([torch.ones(1, slots), 1.0 - torch.eye(slots)])
            self.register_buffer("keep", keep[:, None, :, None].expand(-1, att.h, -1, att.dh + 1).contiguous())
            # The attention's output projection, centred; its residual h, centred per slot, is
            # added (the same for every row). The feed-forward's output is centred likewise, so
            # the stream stays centred and its norms are root-mean-square scalings.
            centre = torch.eye(d) - 1.0 / d
            self.register_linear("out", centre @ att.out.weight, centre @ att.out.bias)
            if model.cross.ff is not None:
                self.register_linear("ff0", *fold_norm(model.cross.ff[0], model.cross.n2))
                self.register_linear("ff2", centre @ model.cross.ff[2].weight, centre @ model.cross.ff[2].bias)
            # The heads read [c, h, S - h_i, h_j]: the layer norm's scale and shift folded into the
            # c columns, the co-runner-sum projection into the last two (with opposite signs).
            def head(linear):
                w, b = linear.weight, linear.bias
                w_own, w_cross, w_others = w[:, :d], w[:, d:2 * d], w[:, 2 * d:]
                others = w_others @ model.others_proj.weight
                return (torch.cat([w_cross * model.norm.weight[None, :], w_own, others, -others], dim=1),
                        b + w_cross @ model.norm.bias + w_others @ model.others_proj.bias)
            # The slowdown head in three parts, so that only the part that differs per row and slot
            # runs over all of them: c per row and slot, [h, S - h_i] per slot, h_j per row.
            w, b = head(model.slowdown_head[0])
            self.register_linear("sd_c", w[:, :d], torch.zeros_like(b))
            self.register_linear("sd_slot", w[:, d:3 * d], b)
            # The per-row part comes out tiled once per slot ([M, N x hidden]), so that adding it
            # to every slot of its row is an add of same-shaped tensors: tract adds a term
            # broadcast along the middle axis of [M, N, hidden] element by element (58 us of a
            # 0.85 ms run), the tiled product costs a few.
            self.register_linear("sd_row", w[:, 3 * d:].repeat(slots, 1), torch.zeros(slots * b.shape[0]))
            # Usage is read from row 0 alone, where nothing is removed (h_j = 0).
            w, b = head(model.usage_head)
            self.register_linear("usage", w[:, :3 * d], b)

    def register_linear(self, name, weight, bias):
        """Keeps a folded linear layer as the constants `<name>_w` and `<name>_b`."""
        self.register_buffer(f"{name}_w", weight)
        self.register_buffer(f"{name}_b", bias)

    def linear(self, x, name):
        return torch.matmul(x, getattr(self, f"{name}_w").t()) + getattr(self, f"{name}_b")

    def feed_forward(self, x, block, name):
        """`block`'s feed-forward with its residual, its norm folded into the layer `name`."""
        if block.ff is None:
            return x
        hidden = F.gelu(self.linear(normalize(x, block.n2.eps), name), approximate="tanh")
        return x + block.ff[2](hidden)

    def encode(self, x):
        """`Predictor.encode` for one host: x [1, N, T, F] -> [N, d]."""
        tb = self.model.temporal
        h = torch.matmul(torch.cat([x[0], self.time_onehot], dim=-1), self.proj_w.t())  # [N, T, d]
        d = h.shape[-1]
        heads = tb.att.h
        q, k, v = self.linear(normalize(h, tb.n1.eps), "t_qkv").split(d, dim=-1)  # [N, T, d]
        keys = k.transpose(1, 2).repeat(1, 1, heads) * self.t_key_mask  # [N, d, H x T]
        values = v.repeat(1, heads, 1) * self.t_value_mask  # [N, H x T, d]
        # A softmax without the row maximum (the scores are bounded, see the class comment), each
        # head's rows summed by a product with a block of ones: both cheaper in tract than its
        # Softmax.
        e = torch.exp(torch.matmul(q, keys))  # [N, T, H x T], q already scaled
        att = e / torch.matmul(e, self.t_head_sums)
        y = torch.matmul(att, values)  # [N, T, d], the heads concatenated
        h = self.feed_forward(h + tb.att.out(y), tb, "t_ff0")
        return self.model.pool(torch.cat([h[:, -1], h.mean(dim=1)], dim=-1))

    def attention_rows(self, h, present):
        """The cross layer's attention for every row, with its residual, centred (each vector's
        mean removed): h [N, d] -> [1 + N, N, d]."""
        att = self.model.cross.att
        n, d = h.shape
        m = self.keep.shape[0]
        heads, dh = att.h, att.dh
        q, k, v = att.qkv(self.model.cross.n1(h)).split(d, dim=-1)
        q = q.reshape(n, heads, dh).transpose(0, 1)  # [H, N, dh]
        k = k.reshape(n, heads, dh).transpose(0, 1)
        v = v.reshape(n, heads, dh).transpose(0, 1)
        scores = torch.matmul(q, k.transpose(1, 2)) * (1.0 / math.sqrt(dh)) + (1.0 - present) * -1e4
        e = torch.exp(scores)  # [H, N, N], absent keys exactly 0 (bounded scores less 1e4)
        v1 = torch.cat([v, torch.ones(heads, n, 1)], dim=-1)  # [H, N, dh + 1]
        nd = torch.matmul(e, v1.expand(m, -1, -1, -1) * self.keep)  # [M, H, N, dh + 1]
        # A query whose every key is removed or absent has 0 / 0: clamp (its row is meaningless).
        y = nd[..., :dh] / nd[..., dh:].clamp(min=1e-30)
        y = y.transpose(1, 2).reshape(m, n, d)
        return self.linear(y, "out") + (h - h.mean(-1, keepdim=True))

    def cross_rows(self, h, present):
        """The cross layer and the final norm for every row: h [N, d] -> [1 + N, N, d], what
        `Predictor.across` normalises, with the stream centred (class comment)."""
        mdl = self.model
        x = self.attention_rows(h, present)
        if mdl.cross.ff is not None:
            hidden = F.gelu(self.linear(rms_normalize(x, mdl.cross.n2.eps), "ff0"), approximate="tanh")
            x = x + self.linear(hidden, "ff2")
        return rms_normalize(x, mdl.norm.eps)

    def forward(self, x, present):
        """x [1, N, T, F] -> usage [N, 6], slowdown [1 + N, N]."""
        mdl = self.model
        h = self.encode(x)  # [N, d]
        c = self.cross_rows(h, present)  # [M, N, d]
        d = c.shape[-1]
        ph = h * present[:, None]
        per_slot = ph.sum(0, keepdim=True) - ph  # S - h_i, [N, d]
        per_row = torch.cat([torch.zeros(1, d), ph])  # h_j of the removed slot, [M, d]
        # The head's input [c, h, S - h_i, h_j] times its weights, as the sum of a product over
        # every row and slot (c), one per slot and one per row, broadcast: the per-slot and per-row
        # columns of one product over all 1 056 rows cost as much as the c part.
        slot_term = self.linear(torch.cat([h, per_slot], dim=-1), "sd_slot")  # [N, hidden]
        row_term = self.linear(per_row, "sd_row")  # [M, N x hidden]: each row's term once per slot
        m, n = c.shape[0], c.shape[1]
        hidden = ((self.linear(c, "sd_c") + slot_term).reshape(m, -1) + row_term).reshape(m, n, -1)
        sd = torch.exp(mdl.slowdown_head[2](F.gelu(hidden, approximate="tanh")).squeeze(-1).clamp(-3.0, 5.0))
        usage = x[0, :, -1, :USAGE] + self.linear(torch.cat([c[0], h, per_slot], dim=-1), "usage") * mdl.std[:USAGE]
        return usage, sd


# The serving graph exponentiates attention scores without subtracting their maximum: exp(88)
# overflows a float32, and a row sums up to 32 of them times values. A bound of 60 leaves room.
MAX_ATTENTION_SCORE = 60.0


def attention_score_bounds(model):
    """The largest |score| each attention of `model` can produce, for any input. Queries and keys
    are linear maps of a layer-normed vector z (centred, mean square 1, so |z| <= sqrt(d)) scaled
    and shifted by the norm's weight g and bias b: |g * z + b| <= max|g| sqrt(d) + |b|, and a
    score is q.k / sqrt(d_head) per head, so |score| <= |q| |k| / sqrt(d_head) with
    |q| <= |W_q| |g * z + b| + |b_q| (|W_q|: the largest singular value of the head's rows)."""
    bounds = {}
    for name, block in (("temporal", model.temporal), ("cross", model.cross)):
        att, norm = block.att, block.n1
        d = norm.normalized_shape[0]
        with torch.no_grad():
            z = float(norm.weight.abs().max()) * math.sqrt(d) + float(torch.linalg.vector_norm(norm.bias))
            w_q, w_k, _ = att.qkv.weight.split(d, dim=0)
            b_q, b_k, _ = att.qkv.bias.split(d, dim=0)
            worst = 0.0
            for h in range(att.h):
                rows = slice(h * att.dh, (h + 1) * att.dh)
                q = float(torch.linalg.matrix_norm(w_q[rows], ord=2)) * z + float(torch.linalg.vector_norm(b_q[rows]))
                k = float(torch.linalg.matrix_norm(w_k[rows], ord=2)) * z + float(torch.linalg.vector_norm(b_k[rows]))
                worst = max(worst, q * k / math.sqrt(att.dh))
        bounds[name] = worst
    return bounds


class ServingGraph(nn.Module):
    """The exported form, per the interface: one host's forecast and its counterfactual rows in
    one run, the members of an ensemble averaged."""

    def __init__(self, ensemble, slots):
        super().__init__()
        for k, member in enumerate(ensemble.members):
            for name, bound in attention_score_bounds(member).items():
                if bound > MAX_ATTENTION_SCORE:
                    raise ValueError(f"member {k}: {name} attention scores may reach {bound:.1f}, above "
                                     f"{MAX_ATTENTION_SCORE}: the serving graph's exponentials could overflow")
        self.members = nn.ModuleList([ServingMember(m, slots) for m in ensemble.members])

    def forward(self, features, present):
        x = features.unsqueeze(0)
        outs = [member(x, present) for member in self.members]
        usage = torch.stack([o[0] for o in outs]).mean(0)
        sd = torch.stack([o[1] for o in outs]).mean(0)
        return usage, sd[0], sd[1:]


# --- baselines and metrics ---

def mae(pred, true):
    return float(np.mean(np.abs(pred - true)))


def mape(pred, true):
    return float(np.mean(np.abs(pred - true) / np.abs(true)) * 100.0)


def ridge(a, y, lam=1.0):
    a1 = np.hstack([a, np.ones((a.shape[0], 1))])
    reg = lam * np.eye(a1.shape[1])
    reg[-1, -1] = 0
    return np.linalg.solve(a1.T @ a1 + reg, a1.T @ y)


def ridge_predict(w, a):
    return np.hstack([a, np.ones((a.shape[0], 1))]) @ w


def regression_inputs(w, mean, std):
    """Per present slot: its own window (normalised, flattened), plus the sum of its
    co-runners' last-step features and their count: what a linear model can use of the host."""
    x = (w["x"] - mean) / std
    present = w["present"]
    own = x.reshape(x.shape[0], x.shape[1], -1)
    last = x[:, :, -1] * present[:, :, None]
    others = last.sum(axis=1, keepdims=True) - last
    count = (present.sum(axis=1, keepdims=True) - 1)[:, :, None].repeat(x.shape[1], axis=1)
    return np.concatenate([own, others, count], axis=-1)


def evaluate(name_to_pred, w):
    """MAE and MAPE of slowdown (labelled slots) and of next usage (present slots)."""
    sel = w["sd_mask"] > 0
    chg = sel & (w["change"] > 0)
    pres = w["present"] > 0
    true_sd = w["sd"][sel]
    true_u = w["usage"][pres]
    busy = true_u[:, 0] >= 0.05
    out = {}
    for name, (sd, usage) in name_to_pred.items():
        m = {}
        if sd is not None:
            m["slowdown_mae"] = mae(sd[sel], true_sd)
            m["slowdown_mape_pct"] = mape(sd[sel], true_sd)
            m["slowdown_mape_pct_at_phase_change"] = mape(sd[chg], w["sd"][chg]) if chg.any() else None
        if usage is not None:
            u = usage[pres]
            m["cpu_cores_mae"] = mae(u[:, 0], true_u[:, 0])
            m["cpu_cores_mape_pct"] = mape(u[busy, 0], true_u[busy, 0])
            m["usage_mae"] = {FEATURE_NAMES[k]: mae(u[:, k], true_u[:, k]) for k in range(USAGE)}
        out[name] = m
    return out


def evaluate_by_kind(name_to_sd, w):
    """Slowdown error per workload kind, and for solo and co-located windows apart: where the
    error is. Per group: labelled windows, each model's MAPE, the transformer's MAE, and the
    group's share of the transformer's summed relative error (what its MAPE averages)."""
    sel = w["sd_mask"] > 0
    true = w["sd"]
    rel = {name: np.abs(sd - true) / np.abs(np.where(sel, true, 1.0)) for name, sd in name_to_sd.items()}
    total = float(rel["transformer"][sel].sum())
    groups = [(kind, sel & (w["kind"] == kind)) for kind in sorted(set(w["kind"][sel].tolist()))]
    groups += [("(solo)", sel & (w["solo"] > 0)), ("(co-located)", sel & (w["solo"] == 0))]
    out = {}
    for name, mask in groups:
        if not mask.any():
            continue
        out[name] = {"windows": int(mask.sum()),
                     "slowdown_mape_pct": {m: float(r[mask].mean() * 100.0) for m, r in rel.items()},
                     "transformer_slowdown_mae": mae(name_to_sd["transformer"][mask], true[mask]),
                     "share_of_transformer_relative_error_pct": float(rel["transformer"][mask].sum() / total * 100.0)}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="predictor/data")
    ap.add_argument("--out", default="predictor/model")
    ap.add_argument("--version", default=None,
                    help="model version (default: tf-<date of the data>-<n experiments>e-<hash of the ONNX file>)")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--d-model", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--slowdown-weight", type=float, default=2.0,
                    help="weight of the slowdown loss against the usage loss")
    ap.add_argument("--log-weight", type=float, default=0.0,
                    help="weight of |log predicted - log measured slowdown| in the slowdown loss")
    ap.add_argument("--rel-weight", type=float, default=1.0,
                    help="weight of |predicted / measured slowdown - 1| (MAPE's own error) in the slowdown loss")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--cross-ff", type=int, default=0,
                    help="feed-forward width of the cross-workload layer (0: none; it runs once per slot mask)")
    ap.add_argument("--input-noise", type=float, default=0.0, help="training-time input jitter, in feature spreads")
    ap.add_argument("--ensemble", type=int, default=1, help="models averaged inside the exported graph")
    ap.add_argument("--tune", action="store_true",
                    help="evaluate on validation experiments carved out of the training ones (ids 1, 5, 9, ...) "
                         "and export nothing: for choosing settings without looking at the held-out set")
    ap.add_argument("--tune-fold", type=int, default=1, choices=[0, 1, 2],
                    help="with --tune: validate on the training experiments whose id modulo 4 is this "
                         "(1: ids 1, 5, 9, ...; 0 and 2 give two more folds, never the held-out 3)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (more than one is slower for a model this small on a busy host)")
    ap.add_argument("--card", default="predictor/MODEL_CARD.md")
    ap.add_argument("--benchmarks", default="docs/BENCHMARKS.md")
    ap.add_argument("--predictions", default=None, help="also save held-out predictions here (.npz) for analysis")
    ap.add_argument("--weights", default=None,
                    help="start from trained weights (the weights.pt an earlier run wrote) instead of training: "
                         "exports and evaluates that same model again, e.g. after a change to the serving graph "
                         "(training is byte-identical on one machine, not across machines)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite the model card and benchmarks table")
    args = ap.parse_args()
    if args.epochs < 1 or args.d_model < 2 or args.d_model % 2 or args.ensemble < 1:
        ap.error("--epochs and --ensemble must be at least 1, --d-model even and at least 2 (2 heads)")
    if args.weights and args.tune:
        ap.error("--weights exports a trained model; --tune chooses how to train one: use one or the other")
    if not 0 <= args.dropout < 1 or args.cross_ff < 0 or args.input_noise < 0:
        ap.error("--dropout must be in [0, 1); --cross-ff and --input-noise must not be negative")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    hosts, segments = load_hosts(args.data)
    train_hosts = [h for h in hosts if h.experiment % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    test_hosts = [h for h in hosts if h.experiment % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    if args.tune:
        test_hosts = [h for h in train_hosts if h.experiment % HELD_OUT_EVERY == args.tune_fold]
        train_hosts = [h for h in train_hosts if h.experiment % HELD_OUT_EVERY != args.tune_fold]
    if not train_hosts or not test_hosts:
        sys.exit(f"need experiments for both training and held-out evaluation; have {len(hosts)}")
    train_slots = max(len(h.workloads) for h in hosts)
    tr = make_windows(train_hosts, train_slots)
    te = make_windows(test_hosts, train_slots)

    # Normalisation from the training data's present slots only; flags and constant features
    # keep a scale of 1 so they pass through unchanged.
    flat = tr["x"][tr["present"] > 0].reshape(-1, NUM_FEATURES)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std = np.where(std < 1e-3, 1.0, std).astype(np.float32)
    mean = mean.astype(np.float32)

    if args.weights:
        model = load_weights(args.weights, mean, std, args)
    else:
        model = Ensemble([train_member(tr, mean, std, args, seed=args.seed + 1000 * k) for k in range(args.ensemble)])
    model = model.eval()
    n_train = tr["x"].shape[0]
    with torch.no_grad():
        tf_usage, tf_sd = model(torch.tensor(te["x"]), torch.tensor(te["present"]))
    tf_usage, tf_sd = tf_usage.numpy(), tf_sd.numpy()

    # Baselines.
    last_usage = te["x"][:, :, -1, :USAGE]
    ewma_usage = te["x"][:, :, 0, :USAGE].copy()
    for k in range(1, WINDOW):
        ewma_usage = EWMA_ALPHA * te["x"][:, :, k, :USAGE] + (1 - EWMA_ALPHA) * ewma_usage
    a_tr, a_te = regression_inputs(tr, mean, std), regression_inputs(te, mean, std)
    ptr = tr["present"] > 0
    w_usage = ridge(a_tr[ptr], tr["usage"][ptr])
    lin_usage = ridge_predict(w_usage, a_te.reshape(-1, a_te.shape[-1])).reshape(*a_te.shape[:2], USAGE)
    ltr = tr["sd_mask"] > 0
    w_sd = ridge(a_tr[ltr], np.log(tr["sd"][ltr]))
    lin_sd = np.exp(ridge_predict(w_sd, a_te.reshape(-1, a_te.shape[-1]))).reshape(a_te.shape[:2])
    if args.predictions:
        np.savez_compressed(args.predictions, tf_sd=tf_sd, lin_sd=lin_sd, **te)
    predictions = {
        "transformer": (tf_sd, tf_usage),
        "last_value": (te["last_sd"], last_usage),
        "ewma": (te["ewma_sd"], ewma_usage),
        "linear_regression": (lin_sd, lin_usage),
    }
    metrics = evaluate(predictions, te)
    by_kind = evaluate_by_kind({name: sd for name, (sd, _) in predictions.items()}, te)
    if args.tune:
        for name, r in metrics.items():
            print(f"validation {name}: slowdown MAE {r['slowdown_mae']:.3f} MAPE {r['slowdown_mape_pct']:.1f}% "
                  f"cpu MAE {r['cpu_cores_mae']:.3f}")
        return

    # Export.
    os.makedirs(args.out, exist_ok=True)
    data_params = json.load(open(os.path.join(args.data, "collection.json")))
    started = min(r["started_unix"] for r in data_params["runs"])
    date = datetime.datetime.fromtimestamp(started, datetime.timezone.utc).strftime("%Y-%m-%d")
    serving = ServingGraph(model, SLOTS).eval()
    for k, member in enumerate(model.members):
        bounds = ", ".join(f"{name} {b:.1f}" for name, b in attention_score_bounds(member).items())
        print(f"member {k}: attention scores bounded by {bounds} (exponentials safe below {MAX_ATTENTION_SCORE})")
    # The reference input: the held-out window with the most labelled co-located slots,
    # placed in scattered slots of the 32 to exercise the mask.
    best = int(np.argmax(te["sd_mask"].sum(1) * 10 + te["present"].sum(1) + (te["sd"] * te["sd_mask"]).sum(1) / 100))
    feats = np.zeros((SLOTS, WINDOW, NUM_FEATURES), dtype=np.float32)
    present = np.zeros(SLOTS, dtype=np.float32)
    where = [3, 10, 17, 29][: int(te["present"][best].sum())]
    for src, dst in enumerate(where):
        feats[dst] = te["x"][best, src]
        present[dst] = 1
    ft, pt = torch.tensor(feats), torch.tensor(present)
    with torch.no_grad():
        ref_usage, ref_sd, ref_without = serving(ft, pt)
    # The serving graph (32 scattered slots) must agree with the training form (packed slots).
    n_ref = len(where)
    with torch.no_grad():
        u_train, s_train = model(torch.tensor(te["x"][best:best + 1, :n_ref]), torch.tensor(te["present"][best:best + 1, :n_ref]))
    gap = max(float((u_train[0] - ref_usage[where]).abs().max()), float((s_train[0] - ref_sd[where]).abs().max()))
    # And its counterfactual rows must equal the plain computation with each slot's present flag
    # cleared (the serving graph shares the mask-independent work between rows).
    with torch.no_grad():
        for j in where:
            cleared = pt.clone()
            cleared[j] = 0
            _, s_plain = model(ft.unsqueeze(0), cleared.unsqueeze(0))
            keep = cleared > 0
            gap = max(gap, float((s_plain[0][keep] - ref_without[j][keep]).abs().max()))
    if gap > 1e-4:
        raise SystemExit(f"the serving graph differs from the trained model by {gap}")
    # The weights apart from the graph: `--weights` exports this model again without retraining.
    torch.save(model.state_dict(), os.path.join(args.out, "weights.pt"))
    onnx_path = os.path.join(args.out, "entente-predictor.onnx")
    torch.onnx.export(serving, (ft, pt), onnx_path, input_names=["features", "present"],
                      output_names=["usage", "slowdown", "slowdown_without"], opset_version=17, dynamo=False)
    check = check_onnx(onnx_path, serving, te, where)
    # The version names the exact graph: the export is deterministic, so its hash is too.
    with open(onnx_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:8]
    version = args.version or f"tf-{date}-{len(hosts)}e-{digest}"

    # The serving graph must agree with the training form on every held-out window.
    sidecar = {"interface": INTERFACE, "version": version, "window": WINDOW, "slots": SLOTS,
               "features": NUM_FEATURES, "interval_ms": INTERVAL_MS, "feature_names": FEATURE_NAMES,
               "trained_on": f"{len(train_hosts)} experiments ({n_train} host windows) of predictor/data, "
                             f"collected {date}; held out: {len(test_hosts)} experiments"}
    with open(os.path.join(args.out, "entente-predictor.json"), "w") as f:
        json.dump(sidecar, f, indent=1)
        f.write("\n")
    ref = {"version": version, "experiment": int(te["experiment"][best]), "slots_used": where,
           "tolerance": 1e-4,
           "inputs": {"features": feats.tolist(), "present": present.tolist()},
           "outputs": {"usage": ref_usage.numpy().tolist(), "slowdown": ref_sd.numpy().tolist(),
                       "slowdown_without": ref_without.numpy().tolist()}}
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")

    n_params = sum(p.numel() for p in model.parameters())
    summary = {
        "version": version, "seed": args.seed, "epochs": args.epochs, "parameters": n_params,
        "onnx_bytes": os.path.getsize(onnx_path), "onnx_vs_pytorch_max_abs_diff": check,
        "train": {"experiments": [h.experiment for h in train_hosts], "host_windows": int(n_train),
                  "labelled_slowdowns": int(tr["sd_mask"].sum())},
        "held_out": {"experiments": [h.experiment for h in test_hosts], "host_windows": int(te["x"].shape[0]),
                     "labelled_slowdowns": int(te["sd_mask"].sum()),
                     "labelled_at_phase_change": int(((te["sd_mask"] > 0) & (te["change"] > 0)).sum()),
                     "slowdown_label_range": [float(te["sd"][te["sd_mask"] > 0].min()),
                                              float(te["sd"][te["sd_mask"] > 0].max())]},
        "background_load": {"loadavg1_mean": float(np.mean([h.load.mean() for h in hosts])),
                            "loadavg1_max": float(max(h.load.max() for h in hosts))},
        "metrics": metrics,
        "slowdown_by_kind": by_kind,
    }
    sd_base = {k: v["slowdown_mae"] for k, v in metrics.items() if k != "transformer"}
    best_base = min(sd_base, key=sd_base.get)
    improvement = 1 - metrics["transformer"]["slowdown_mae"] / sd_base[best_base]
    summary["targets"] = {
        "best_slowdown_baseline": best_base,
        "slowdown_mae_improvement_over_best_baseline_pct": improvement * 100,
        "beats_best_baseline_by_30pct": bool(improvement >= 0.30),
        "slowdown_mape_under_10pct": bool(metrics["transformer"]["slowdown_mape_pct"] < 10.0),
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    table = accuracy_table(summary)
    print(table)
    if not args.no_docs:
        write_section(args.card, "accuracy", table)
        write_section(args.card, "accuracy-by-kind", by_kind_table(by_kind))
        write_section(args.card, "data-summary", data_summary(segments, hosts))
        write_section(args.benchmarks, "predictor-accuracy", table)


def check_onnx(path, serving, te, where):
    """Runs the ONNX file with onnxruntime on held-out windows and returns the largest absolute
    difference from PyTorch over all three outputs. Fails loudly above 1e-4."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for i in range(0, te["x"].shape[0], max(1, te["x"].shape[0] // 20)):
        feats = np.zeros((SLOTS, WINDOW, NUM_FEATURES), dtype=np.float32)
        present = np.zeros(SLOTS, dtype=np.float32)
        n = int(te["present"][i].sum())
        for src, dst in enumerate(where[:n] if len(where) >= n else range(n)):
            feats[dst], present[dst] = te["x"][i, src], 1
        got = sess.run(None, {"features": feats, "present": present})
        with torch.no_grad():
            want = serving(torch.tensor(feats), torch.tensor(present))
        for g, w in zip(got, want):
            keep = present > 0
            g, w = np.asarray(g), w.numpy()
            if g.ndim == 2 and g.shape[0] == SLOTS and g.shape[1] == SLOTS:
                g, w = g[keep][:, keep], w[keep][:, keep]
            else:
                g, w = g[keep], w[keep]
            worst = max(worst, float(np.max(np.abs(g - w))))
    if worst > 1e-4:
        raise SystemExit(f"ONNX and PyTorch differ by {worst} on held-out windows")
    print(f"onnxruntime matches PyTorch: max abs diff {worst:.2e}")
    return worst


def fmt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}"


def accuracy_table(s):
    m = s["metrics"]
    rows = ["| model | slowdown MAE | slowdown MAPE % | slowdown MAPE % at phase changes | cpu cores MAE | cpu MAPE % (≥0.05 cores) | memory log-MiB MAE |",
            "|---|---|---|---|---|---|---|"]
    for name in ["transformer", "last_value", "ewma", "linear_regression"]:
        r = m[name]
        rows.append(f"| {name} | {fmt(r['slowdown_mae'])} | {fmt(r['slowdown_mape_pct'], 1)} | "
                    f"{fmt(r['slowdown_mape_pct_at_phase_change'], 1)} | {fmt(r['cpu_cores_mae'])} | "
                    f"{fmt(r['cpu_cores_mape_pct'], 1)} | {fmt(r['usage_mae']['memory_log_mib'])} |")
    t = s["targets"]
    h = s["held_out"]
    rows.append("")
    rows.append(f"Model `{s['version']}`, {s['parameters']} parameters, ONNX {s['onnx_bytes']} bytes. "
                f"Held out: experiments {h['experiments']} ({h['host_windows']} host windows, "
                f"{h['labelled_slowdowns']} labelled slowdowns, {h['labelled_at_phase_change']} of them at a phase "
                f"change; labels {h['slowdown_label_range'][0]:.2f}–{h['slowdown_label_range'][1]:.2f}). "
                f"Transformer vs best slowdown baseline ({t['best_slowdown_baseline']}): "
                f"{abs(t['slowdown_mae_improvement_over_best_baseline_pct']):.1f}% "
                f"{'lower' if t['slowdown_mae_improvement_over_best_baseline_pct'] >= 0 else 'higher'} MAE "
                f"(target ≥ 30%: {'met' if t['beats_best_baseline_by_30pct'] else 'NOT met'}); "
                f"slowdown MAPE target < 10%: {'met' if t['slowdown_mape_under_10pct'] else 'NOT met'}. "
                f"ONNX (onnxruntime) vs PyTorch max abs difference: {s['onnx_vs_pytorch_max_abs_diff']:.1e}. "
                f"Reproduce: `scripts/train-predictor.sh`.")
    return "\n".join(rows)


def data_summary(segments, hosts):
    """What the labels are, per kind, from the segment rows: so that the model card's account
    of the data is recomputed with the model rather than copied by hand. `solo_spread` (how far
    a workload's solo runs in one experiment disagreed) is there only in data collected with
    more than one solo segment per workload."""
    kinds = sorted({s["kind"] for s in segments})
    colocated = defaultdict(list)
    spread = defaultdict(dict)
    labelled, unlabelled = 0, 0
    for s in segments:
        if s["active"] != "1":
            continue
        if s["slowdown"] == "":
            unlabelled += 1
            continue
        labelled += 1
        if s["solo"] == "0":
            colocated[s["kind"]].append(float(s["slowdown"]))
        if s.get("solo_spread"):
            spread[s["kind"]][(s["experiment"], s["workload"])] = float(s["solo_spread"])

    def row(name, labels, spreads):
        labels = np.array(labels) if labels else np.array([np.nan])
        med_spread = f"{np.median(spreads) * 100:.1f} %" if spreads else "n/a"
        return (f"| {name} | {int(np.isfinite(labels).sum())} | {np.nanmedian(labels):.2f} | {np.nanmin(labels):.2f}–"
                f"{np.nanmax(labels):.2f} | {int((labels < 1).sum())} | {int((labels > 2).sum())} | {med_spread} |")

    rows = ["| kind | co-located labels | median | range | below 1 | above 2 | median solo spread |",
            "|---|---|---|---|---|---|---|"]
    for kind in kinds:
        rows.append(row(kind, colocated[kind], list(spread[kind].values())))
    rows.append(row("all", [v for k in kinds for v in colocated[k]], [v for k in kinds for v in spread[k].values()]))
    samples = sum(len(h.ticks) * len(h.workloads) for h in hosts)
    rows.append("")
    rows.append(f"{len(hosts)} experiments, {samples} samples, "
                f"{labelled} labelled workload-segments "
                f"({unlabelled} active ones unlabelled: no throughput measured). Solo spread: (largest − smallest) / "
                f"mean of one workload's solo throughputs in one experiment.")
    return "\n".join(rows)


def by_kind_table(by_kind):
    rows = ["| kind | windows | transformer MAPE % | last_value | ewma | linear_regression | transformer MAE | share of the transformer's relative error |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in by_kind.items():
        m = r["slowdown_mape_pct"]
        rows.append(f"| {name} | {r['windows']} | {m['transformer']:.1f} | {m['last_value']:.1f} | {m['ewma']:.1f} | "
                    f"{m['linear_regression']:.1f} | {r['transformer_slowdown_mae']:.3f} | "
                    f"{r['share_of_transformer_relative_error_pct']:.0f} % |")
    return "\n".join(rows)


def write_section(path, name, body):
    """Replaces the text between `<!-- name:begin -->` and `<!-- name:end -->` in path."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        raise SystemExit(f"{path} has no {begin} ... {end} section to write the table into")
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
