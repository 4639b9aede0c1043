#!/usr/bin/env bash
# Installs Chromium and ChromeDriver from Debian's packages if they are missing: the web
# console's browser tests (python/tests/test_console.py) drive headless /usr/bin/chromium
# through Selenium. No browser is downloaded from anywhere else. Idempotent: a second run
# does nothing.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
export DEBIAN_FRONTEND=noninteractive
${sudo_cmd} apt-get update -qq
${sudo_cmd} apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
echo "setup-chromium: installed $(chromium --version | head -n 1)"
