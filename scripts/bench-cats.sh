#!/usr/bin/env bash
# Runs the CATS winner-determination benchmark through the release `entente-arbiter solve`
# command and prints, per instance, our time beside the answer key's HiGHS time (highs_s), whether
# the solve was proven optimal and whether the welfare matches the key (1e-6 relative; the
# optimum, or best_known where no optimum is proven), then the median per set.
#
#   scripts/bench-cats.sh                 # sets small int large, 60 s limit per instance
#   SETS="small" TIME_LIMIT_MS=10000 scripts/bench-cats.sh
#
# ENTENTE_CATS_DIR overrides the benchmark location (default: ../shared/benchmarks/cats beside
# the repository); CARGO_TARGET_DIR is honoured.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cats_dir=${ENTENTE_CATS_DIR:-$root/../shared/benchmarks/cats}
sets=${SETS:-small int large}
time_limit_ms=${TIME_LIMIT_MS:-60000}
if [[ ! -f $cats_dir/answers.tsv ]]; then
    echo "bench-cats: no answers.tsv in $cats_dir (set ENTENTE_CATS_DIR)" >&2
    exit 1
fi

(cd "$root" && cargo build --release -q -p entente-arbiter)
bin=${CARGO_TARGET_DIR:-$root/target}/release/entente-arbiter

results=$(mktemp)
trap 'rm -f "$results"' EXIT
printf '%-6s %-36s %10s %10s %8s %6s %16s %16s\n' set file ours_s highs_s optimal match welfare key
# Columns of answers.tsv are found by name, so the key may gain columns.
tail -n +2 "$cats_dir/answers.tsv" | while IFS= read -r row; do
    eval "$(awk -F'\t' -v hdr="$(head -1 "$cats_dir/answers.tsv")" '
        BEGIN { n = split(hdr, h, "\t") }
        { for (i = 1; i <= n; i++) v[h[i]] = $i
          printf "set=%s file=%s optimum=%s best=%s highs=%s\n", v["set"], v["file"], v["optimum"], v["best_known"], v["highs_s"] }' <<<"$row")"
    [[ " $sets " == *" $set "* ]] || continue
    out=$("$bin" solve --format cats --time-limit-ms "$time_limit_ms" "$cats_dir/$set/$file")
    welfare=$(sed -E 's/.*"welfare":([^,}]*).*/\1/' <<<"$out")
    optimal=$(sed -E 's/.*"optimal":([^,}]*).*/\1/' <<<"$out")
    elapsed_ms=$(sed -E 's/.*"elapsed_ms":([^,}]*).*/\1/' <<<"$out")
    key=${optimum:-$best}
    awk -v s="$set" -v f="$file" -v ms="$elapsed_ms" -v hs="$highs" -v opt="$optimal" -v w="$welfare" -v k="$key" '
        BEGIN {
            d = w - k; if (d < 0) d = -d; a = k < 0 ? -k : k; if (a < 1) a = 1
            match_ = (d <= 1e-6 * a) ? "yes" : "NO"
            printf "%-6s %-36s %10.4f %10s %8s %6s %16.6f %16s\n", s, f, ms / 1000, hs, opt, match_, w, k
        }' | tee -a "$results"
done

echo
echo "median seconds per set (ours vs HiGHS, same instances):"
for set in $sets; do
    awk -v s="$set" '$1 == s { print $3, $4 }' "$results" | sort -n -k1 >"$results.ours"
    n=$(wc -l <"$results.ours")
    [[ $n -gt 0 ]] || continue
    ours=$(awk -v n="$n" 'NR == int((n + 1) / 2) { a = $1 } NR == int(n / 2) + 1 { b = $1 } END { print (a + b) / 2 }' "$results.ours")
    highs=$(awk '{ print $2 }' "$results.ours" | sort -g | awk -v n="$n" 'NR == int((n + 1) / 2) { a = $1 } NR == int(n / 2) + 1 { b = $1 } END { print (a + b) / 2 }')
    matched=$(awk -v s="$set" '$1 == s && $6 == "yes"' "$results" | wc -l)
    printf '  %-6s n=%-3d ours=%ss highs=%ss matched=%d/%d\n' "$set" "$n" "$ours" "$highs" "$matched" "$n"
    rm -f "$results.ours"
done
