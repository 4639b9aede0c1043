#!/usr/bin/env bash
# Runs every test: formatting and lints, the Rust workspace (unit, backend conformance,
# integration tests that start real servers on loopback, S3 included), then the Python package against the
# real server binary. Installs what it needs (prebuilt DuckDB, moto, a Python virtualenv).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-duckdb.sh
# The S3-compatible server (moto) the Delta Lake backend's tests start on loopback.
FEATHERSTORE_MOTO_SERVER="$(./scripts/setup-s3.sh | tail -n 1)"
export FEATHERSTORE_MOTO_SERVER
./scripts/setup-redis.sh
./scripts/setup-chromium.sh
# The web console bundle the server embeds must be what console/ builds to.
./scripts/build-console.sh --check

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# No unwrap in what serves requests (tests may unwrap: a failed unwrap is a failed test). The
# lint cannot be scoped to non-test targets in [workspace.lints], hence this pass.
cargo clippy --workspace --lib --bins -- -D warnings -D clippy::unwrap_used
echo "== cargo test"
cargo test --workspace
echo "== fuzz smoke (corpus replay + a short run per target)"
./scripts/fuzz.sh smoke

echo "== python tests"
venv="$(./scripts/setup-python.sh | tail -n 1)"
# `cargo test --workspace` above built the binary (the CLI's integration tests run it), with the
# workspace's feature set; `cargo build -p featherstore-cli` would rebuild arrow and the rest
# with the CLI's own.
export FEATHERSTORE_BIN="$(pwd)/${CARGO_TARGET_DIR:-target}/debug/featherstore"
case "${CARGO_TARGET_DIR:-}" in /*) export FEATHERSTORE_BIN="${CARGO_TARGET_DIR}/debug/featherstore" ;; esac

echo "== crash loop (SIGKILL/restart during concurrent ingest and reads; 50 cycles by hand)"
# Its stderr is mostly pyarrow's notes on the connections each kill breaks: shown on failure.
crash_log="$(mktemp)"
for backend in duckdb parquet; do
  "${venv}/bin/python" scripts/crash-loop.py --bin "${FEATHERSTORE_BIN}" --backend "${backend}" \
    --cycles 5 2>"${crash_log}" || { tail -n 40 "${crash_log}"; exit 1; }
done
rm -f "${crash_log}"
# Framework adapters are part of the product: a missing framework fails instead of skipping.
FEATHERSTORE_REQUIRE_FRAMEWORKS=1 "${venv}/bin/python" -m pytest python/tests -q
