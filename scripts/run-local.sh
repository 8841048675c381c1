#!/usr/bin/env bash
# Runs the whole stack on this machine: Redis, one worker and the gateway.
#   scripts/run-local.sh          the model named by MODEL_REPO_ID (default: the real
#                                 Qwen/Qwen3-VL-2B-Thinking, downloaded from the hub)
#   scripts/run-local.sh --tiny   the tiny offline checkpoint (no network, no GPU needed)
# Settings come from .env and the environment (see .env.example). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

if [ "${1:-}" = "--tiny" ]; then
  export MODEL_REPO_ID="$PWD/.cache/tiny-qwen3-vl"
fi

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The gateway and worker read .env themselves; ask the settings which Redis they expect.
redis_port=$(.venv/bin/python -c "from urllib.parse import urlparse
from shared.settings import get_settings
print(urlparse(get_settings().redis_url).port or 6379)")
http_port=$(.venv/bin/python -c "from shared.settings import get_settings; print(get_settings().port)")
if ! redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
  mkdir -p .cache/redis
  redis-server --port "$redis_port" --bind 127.0.0.1 --appendonly yes --dir "$PWD/.cache/redis" \
    --save "" >.cache/redis/redis.log 2>&1 &
  pids+=($!)
  until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.2; done
fi

.venv/bin/python -m worker &
pids+=($!)
.venv/bin/python -m api &
gateway=$!
pids+=("$gateway")
echo "gateway on http://localhost:$http_port (the worker is loading the model; see /health)"
playground=$(.venv/bin/python -c "from shared.settings import get_settings; print(get_settings().playground)")
if [ "$playground" = True ]; then
  # Say where the page is once the gateway listens; the watch ends with the gateway.
  (
    while kill -0 "$gateway" 2>/dev/null; do
      if (exec 3<>"/dev/tcp/127.0.0.1/$http_port") 2>/dev/null; then
        echo "playground: open http://localhost:$http_port/ in a browser"
        break
      fi
      sleep 0.5
    done
  ) &
fi
wait -n "${pids[@]}"
