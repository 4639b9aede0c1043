#!/usr/bin/env bash
# Builds and starts `featherstore serve` (release build). With no arguments it runs on the
# embedded default: DuckDB at ./data/features.db, HTTP :8080, Flight :8081, metrics :9090.
# Extra arguments go to `serve` (e.g. --backend parquet --data-dir /tmp/fs).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-duckdb.sh
cargo build --release -p featherstore-cli
exec "${CARGO_TARGET_DIR:-target}/release/featherstore" serve "$@"
