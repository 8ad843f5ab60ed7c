#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 10), from the corpus kept in
# fuzz/corpus/TARGET (grown by earlier runs; not in git) and the seeds in fuzz/seeds/TARGET.
# A failure stops the run and names the input that caused it (in fuzz/artifacts/TARGET).
#
#   fuzz/run.sh            # every target, 10 s each (what CI runs)
#   fuzz/run.sh 600 ring   # one target, ten minutes
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler; works on stable
# Rust (no sanitizer: `-s none`, the checks are the targets' own assertions and Rust's).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -s none
printf '%-16s %12s %8s %8s %10s\n' target executions edges features corpus
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds+=("seeds/$t")
  # The scenario target starts from the scenario corpus itself.
  [ "$t" = scenario ] && seeds+=("../crates/cosh-scenario/corpus")
  log="$(mktemp)"
  if ! cargo fuzz run -s none "$t" "corpus/$t" "${seeds[@]}" -- \
      -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  last="$(grep -E '^#[0-9]+' "$log" | tail -1)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
  corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")"
  printf '%-16s %12s %8s %8s %10s\n' "$t" "$execs" "$cov" "$ft" "$corp"
  rm -f "$log"
done
