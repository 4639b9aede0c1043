#!/usr/bin/env bash
# Rebuilds the web console (console/) into crates/server/console-dist/, which the server
# binary embeds and the repository commits, from the lockfile: `npm ci && npm run build`.
# `--check` builds into a temporary folder instead and fails if the committed bundle differs
# from what the sources build to (a source change committed without its rebuilt bundle).
set -euo pipefail
cd "$(dirname "$0")/../console"
npm ci --no-audit --no-fund --loglevel=error
if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "${out}"' EXIT
  npm run --silent build -- --logLevel error --outDir "${out}" --emptyOutDir
  if ! diff -r "${out}" ../crates/server/console-dist; then
    echo "build-console: crates/server/console-dist is not what console/ builds to; run scripts/build-console.sh and commit it" >&2
    exit 1
  fi
  echo "build-console: the committed bundle matches the sources"
else
  npm run --silent build -- --logLevel error
  echo "build-console: built crates/server/console-dist"
fi
