#!/usr/bin/env bash
# Instructions per operation of the micro-benchmarks, counted by callgrind (docs/micro-benchmarks.md).
#
# Builds the criterion bench binaries (tether-model `protocol`, tether-bus `envelope`) and runs each
# operation under `valgrind --tool=callgrind` in the binaries' fixed-count mode, twice: WARMUP times
# and WARMUP + N times. The difference divided by N is the cost of one operation, with process
# start, input setup and first-call effects (lazy statics, allocator growth) cancelled out.
# Instruction counts are repeatable on a noisy shared box, where times are not: they are the
# regression signal.
#
# Usage: load/callgrind.sh [operation-substring]   (env: N=10000 WARMUP=1000)
# Prints a table and writes load/results/callgrind-<commit>.json; when that file already exists
# (an earlier run of the same commit) it reports whether every count is the same. The envelope
# operations vary by well under 0.01 %: each message id is random, and formatting a random u64 as
# hex costs a few instructions more or less with its number of leading zero digits.
set -euo pipefail

cd "$(dirname "$0")/.."
N=${N:-10000}
WARMUP=${WARMUP:-1000}
FILTER=${1:-}

for tool in valgrind jq cargo git; do
    command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is required" >&2; exit 1; }
done

commit=$(git rev-parse --short HEAD)
dirty=false
if [ -n "$(git status --porcelain -- services/libs/model services/libs/bus Cargo.lock)" ]; then
    dirty=true
fi
out_dir=load/results
out="$out_dir/callgrind-$commit.json"
mkdir -p "$out_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building bench binaries (cargo bench --no-run)..." >&2
cargo bench -p tether-model -p tether-bus --bench protocol --bench envelope --no-run --message-format=json \
    >"$work/cargo.json"
mapfile -t binaries < <(jq -r 'select(.reason == "compiler-artifact" and .executable != null
    and (.target.kind | index("bench"))) | "\(.target.name) \(.executable)"' "$work/cargo.json" | sort -r)
if [ "${#binaries[@]}" -ne 2 ]; then
    echo "callgrind.sh: expected 2 bench executables, got ${#binaries[@]}" >&2
    exit 1
fi

# Total instructions (Ir) of one run of `bin --fixed op count`.
instructions() {
    local bin=$1 op=$2 count=$3
    valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
        "$bin" --fixed "$op" "$count" >/dev/null 2>"$work/valgrind.log" \
        || { cat "$work/valgrind.log" >&2; return 1; }
    awk '$1 == "summary:" || $1 == "totals:" { print $2; exit }' "$work/callgrind.out"
}

results="$work/results.jsonl"
: >"$results"
printf '%-40s %14s\n' operation instructions/op
for entry in "${binaries[@]}"; do
    bench=${entry%% *}
    bin=${entry#* }
    while read -r op; do
        [[ -z "$FILTER" || "$op" == *"$FILTER"* ]] || continue
        base=$(instructions "$bin" "$op" "$WARMUP")
        total=$(instructions "$bin" "$op" "$((WARMUP + N))")
        per_op=$(awk -v d="$((total - base))" -v n="$N" 'BEGIN { printf "%.1f", d / n }')
        printf '%-40s %14s\n' "$op" "$per_op"
        jq -nc --arg bench "$bench" --arg op "$op" --argjson base "$base" --argjson total "$total" \
            --argjson per_op "$per_op" \
            '{bench: $bench, operation: $op, instructions_per_op: $per_op, ir_warmup: $base, ir_warmup_plus_n: $total}' \
            >>"$results"
    done < <("$bin" --ops)
done

previous=""
[ -f "$out" ] && previous=$(cat "$out")
jq -s --arg commit "$commit" --argjson dirty "$dirty" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" --arg valgrind "$(valgrind --version)" \
    --arg rustc "$(rustc --version)" --argjson n "$N" --argjson warmup "$WARMUP" \
    --arg command "load/callgrind.sh${*:+ $*}" \
    '{commit: $commit, tree_dirty: $dirty, date: $date, loadavg: $loadavg, command: $command,
      method: "callgrind Ir of (WARMUP + N) runs minus WARMUP runs, divided by N",
      n: $n, warmup: $warmup, valgrind: $valgrind, rustc: $rustc, results: .}' "$results" >"$out"
echo "wrote $out" >&2

if [ -n "$previous" ]; then
    changed=$(jq -rn --argjson old "$previous" --slurpfile new "$out" '
        ($old.results | map({(.operation): .instructions_per_op}) | add) as $before
        | $new[0].results[]
        | select($before[.operation] != null and $before[.operation] != .instructions_per_op)
        | "\(.operation): \($before[.operation]) -> \(.instructions_per_op)"
          + " (\((.instructions_per_op - $before[.operation]) * 100 / $before[.operation] * 10000 | round / 10000)%)"')
    if [ -z "$changed" ]; then
        echo "identical to the previous run of $commit" >&2
    else
        echo "differs from the previous run of $commit:" >&2
        echo "$changed" >&2
    fi
fi
