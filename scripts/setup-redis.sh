#!/usr/bin/env bash
# Installs redis-server and redis-cli from Debian's packages if they are missing: the Redis
# online backend's tests start their own servers (a single node and a 3-node cluster) on
# free loopback ports. Idempotent: a second run does nothing.
set -euo pipefail

if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
export DEBIAN_FRONTEND=noninteractive
${sudo_cmd} apt-get update -qq
${sudo_cmd} apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
# The package's own service is not used (and cannot start without systemd in containers).
echo "setup-redis: installed $(redis-server --version | head -n 1)"
