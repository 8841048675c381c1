#!/usr/bin/env bash
# Installs everything the service and its tests need on a fresh machine:
# redis-server and chromium (Debian packages), a virtual environment with the pinned
# Python packages, and the tiny offline Qwen3-VL checkpoint in .cache/tiny-qwen3-vl.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $sudo_cmd apt-get update -qq || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server"
  apt_install redis-server
fi

# Headless Chromium for the playground's browser test, driven by the playwright package
# (requirements-dev.txt): playwright's own browser download cannot work here, so the test
# uses Debian's build. Optional: without it that one test skips.
if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (for tests/e2e/test_playground.py)"
  if ! apt_install chromium; then
    echo "warning: could not install chromium; tests/e2e/test_playground.py will skip" >&2
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(cat requirements-*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing Python packages (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$wanted" >"$stamp"
fi

.venv/bin/python -m worker.tiny_checkpoint .cache/tiny-qwen3-vl
