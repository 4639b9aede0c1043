#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer, on the stable toolchain under
# RUSTC_BOOTSTRAP=1) of what the server parses from clients: fuzz/fuzz_targets/*.rs.
#
#   scripts/fuzz.sh smoke    replay the regression corpus, then fuzz each target briefly
#                            (FUZZ_SMOKE_SECONDS, default 12); fails on any crash
#   scripts/fuzz.sh long     fuzz each target FUZZ_LONG_SECONDS (default 300) and print
#                            executions, exec/s and coverage (cov, ft) per target
#   scripts/fuzz.sh seeds    rewrite the generated seed files of fuzz/corpus/
#                            (crates/core/examples/fuzz_seeds.rs)
#
# FUZZ_TARGETS narrows the targets (space-separated). The instrumented build lives outside the
# clone, in ~/.cache/featherstore/fuzz-target, so later runs rebuild only what changed.
# Corpus entries found by a run go to a scratch directory, never into fuzz/corpus: commit an
# input there (a crash, once fixed) by hand. Crash inputs land in $FUZZ_ARTIFACTS.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

mode="${1:-smoke}"
if [ "$mode" = seeds ]; then
  cd .. && exec cargo run -p featherstore-core --features test-support --example fuzz_seeds -- fuzz/corpus
fi
export RUSTC_BOOTSTRAP=1
target_dir="${HOME}/.cache/featherstore/fuzz-target"
artifacts="${FUZZ_ARTIFACTS:-${HOME}/.cache/featherstore/fuzz-artifacts}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Coverage instrumentation, with debug assertions and overflow checks (cargo fuzz's default);
# no sanitizer: the code under test is safe Rust, and a plain build is several times faster
# to compile and run. Panics, overflows and an RSS over 2 GB are the crashes found.
flags=(-s none --target-dir "$target_dir")
all_targets=(ticket spec action_body json_rows arrow_ipc coerce)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"

echo "== cargo fuzz build"
cargo fuzz build "${flags[@]}"

# libFuzzer options common to every run: a crash input goes to the artifacts directory.
run() {
  local target="$1"
  shift
  mkdir -p "$artifacts/$target" "$scratch/$target" "corpus/$target"
  cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -artifact_prefix="$artifacts/$target/" -max_len=16384 -timeout=10 -rss_limit_mb=2048 "$@"
}

case "$mode" in
  smoke)
    for target in "${targets[@]}"; do
      echo "== $target: corpus replay, then ${FUZZ_SMOKE_SECONDS:-12} s"
      for options in -runs=0 -max_total_time="${FUZZ_SMOKE_SECONDS:-12}"; do
        log="$scratch/$target.log"
        if ! run "$target" "$options" >"$log" 2>&1; then
          tail -n 60 "$log"
          echo "FAILED: $target ($options); crash input in $artifacts/$target/" >&2
          exit 1
        fi
        grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1
      done
    done
    ;;
  long)
    seconds="${FUZZ_LONG_SECONDS:-300}"
    summary=()
    for target in "${targets[@]}"; do
      echo "== $target: ${seconds} s"
      log="$scratch/$target.log"
      run "$target" -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || {
        tail -n 40 "$log"
        exit 1
      }
      last="$(grep -E '^#[0-9]+' "$log" | tail -n 1)"
      execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
      per_second="$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')"
      cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
      ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
      corpus="$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$last")"
      echo "$last"
      summary+=("$(printf '%-12s %12s %9s %7s %7s %12s' "$target" "$execs" "$per_second" "$cov" "$ft" "$corpus")")
    done
    printf '%-12s %12s %9s %7s %7s %12s\n' target execs exec/s cov ft corpus
    printf '%s\n' "${summary[@]}"
    uptime
    ;;
  *)
    echo "usage: $0 smoke|long|seeds" >&2
    exit 2
    ;;
esac
