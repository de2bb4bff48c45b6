#!/usr/bin/env python3
"""Instructions per source line from a callgrind profile, through inlining.

callgrind's own annotation charges an inlined call to the library file it came from (a `Vec`
push shows up under `alloc/src/vec/mod.rs`), so in optimised Rust most of a function's cost lands
on lines outside the project. This reads a profile taken with `--dump-instr=yes --dump-line=no`,
resolves every instruction address with `addr2line -i` (which lists the whole inline chain), and
charges the instruction to a line of the project:

  --frame outer   the outermost frame in a matching file: which line of the caller asked for the
                  work (a call to an inlined helper is charged to the line that calls it);
  --frame inner   the innermost frame in a matching file: where the work itself is written.

Only self cost is counted (calls' inclusive costs are skipped), so the lines add up to the
profile's total for the chosen functions.

    scripts/callgrind_lines.py PROFILE BINARY [--function REGEX] [--file SUBSTRING] [--frame outer|inner] [--top N]
"""
import argparse
import collections
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def self_cost_by_address(profile, function_pattern):
    """Self instructions per address of the functions whose name matches."""
    names, counts = {}, collections.Counter()
    current, address, after_call = "", 0, False
    with open(profile) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
            if m:
                if m.group(3):
                    names[m.group(2)] = m.group(3)
                if m.group(1) == "fn":
                    current = names.get(m.group(2), "")
                continue
            if line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
                continue
            m = re.match(r"^(0x[0-9a-f]+|[+-]\d+|\*)\s+(\d+)$", line)
            if not m:
                continue
            position = m.group(1)
            if position.startswith("0x"):
                address = int(position, 16)
            elif position != "*":
                address += int(position)
            if after_call:
                after_call = False
                continue
            if function_pattern.search(current):
                counts[address] += int(m.group(2))
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("binary")
    ap.add_argument("--function", default=".", help="regular expression on callgrind's function names")
    ap.add_argument("--file", default="/src/", help="charge to frames whose file path contains this")
    ap.add_argument("--frame", choices=["outer", "inner"], default="outer")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()

    counts = self_cost_by_address(args.profile, re.compile(args.function))
    if not counts:
        sys.exit("no instructions found: was the profile taken with --dump-instr=yes --dump-line=no, "
                 "and does --function match?")
    addresses = sorted(counts)
    resolved = subprocess.run(["addr2line", "-a", "-i", "-e", args.binary] + [hex(a) for a in addresses],
                              capture_output=True, text=True, check=True).stdout
    blocks = re.split(r"^0x[0-9a-f]+\n", resolved, flags=re.M)[1:]
    by_line = collections.Counter()
    for address, block in zip(addresses, blocks):
        frames = [f for f in block.strip().split("\n") if f]
        ordered = frames if args.frame == "inner" else list(reversed(frames))
        chosen = next((f for f in ordered if args.file in f), frames[-1] if frames else "?")
        by_line[chosen.split(" ")[0].removeprefix(REPO)] += counts[address]
    total = sum(counts.values())
    print(f"{total:>14,}  instructions in all")
    for where, n in by_line.most_common(args.top):
        print(f"{n:>14,}  {100 * n / total:5.1f} %  {where}")


if __name__ == "__main__":
    main()
