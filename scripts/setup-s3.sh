#!/usr/bin/env bash
# Installs the S3-compatible server the Delta Lake backend's tests run against (moto's
# standalone server, from PyPI) into a virtualenv of its own, and prints the path of its
# `moto_server` executable on stdout (everything else goes to stderr), so:
#   export FEATHERSTORE_MOTO_SERVER="$(scripts/setup-s3.sh | tail -n 1)"
# The tests start it on a free loopback port, create a bucket and stop it (crates/testkit
# `s3`). Idempotent: a second run checks the installed version and returns in about a second.
#
# A venv of its own (not the package's, scripts/setup-python.sh): moto pins its own versions of
# boto3, werkzeug and flask, which must not move the package's test dependencies.
set -euo pipefail

venv="${FEATHERSTORE_S3_VENV:-${HOME}/.cache/featherstore/s3-venv}"
python="${FEATHERSTORE_PYTHON:-python3}"
moto_req="moto[server]==5.2.5"

log() { echo "setup-s3: $*" >&2; }

if [ ! -x "${venv}/bin/python" ]; then
  log "creating ${venv}"
  "${python}" -m venv "${venv}" >&2
fi
if ! "${venv}/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("moto") != "5.2.5")' 2>/dev/null \
  || [ ! -x "${venv}/bin/moto_server" ]; then
  log "installing ${moto_req}"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "${moto_req}" >&2
fi
echo "${venv}/bin/moto_server"
