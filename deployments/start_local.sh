#!/usr/bin/env bash
# Run the LVM platform's Prefect stack on this machine, in order:
#   1. Prefect server (background, UI on http://127.0.0.1:${PREFECT_PORT:-4200})
#   2. python -m deployments.setup   (work pool lvm-process, alert block, limits, automations)
#   3. prefect --no-prompt deploy --all   (deployments of prefect.yaml)
#   4. prefect worker start --pool lvm-process   (foreground; Ctrl-C stops it, the server keeps running)
#
# Usage: deployments/start_local.sh [up|server|deploy|worker|stop|status]   (default: up)
# Settings (environment): PREFECT_PORT, PYTHON (default .venv/bin/python), LVM_DATA_DIR,
# LVM_SNAPSHOT_SOURCE, LVM_ALERT_WEBHOOK_URL, LVM_ALERT_ROUTING_KEY, MLFLOW_TRACKING_URI,
# PREFECT_HOME (default ~/.prefect; the server keeps its concurrency leases in $PREFECT_HOME/concurrency_leases),
# LVM_ZOMBIE_WINDOW_SECONDS (default 90: a running flow run silent that long is marked Crashed).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"

PORT="${PREFECT_PORT:-4200}"
PY="${PYTHON:-$REPO_DIR/.venv/bin/python}"
PREFECT="$(dirname "$PY")/prefect"
STATE_DIR="$REPO_DIR/.prefect/local"
SERVER_PID="$STATE_DIR/server.pid"
SERVER_LOG="$STATE_DIR/server.log"

export LVM_REPO_DIR="$REPO_DIR"          # prefect.yaml's pull step changes into this checkout
export PREFECT_API_URL="http://127.0.0.1:${PORT}/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
# Every flow run started from here (worker or ad hoc) emits a heartbeat event every 30 s; setup's zombie
# automation marks a running flow run Crashed after LVM_ZOMBIE_WINDOW_SECONDS (default 3 x 30 s) without one.
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"

mkdir -p "$STATE_DIR"

server_running() {
  [[ -f "$SERVER_PID" ]] && kill -0 "$(cat "$SERVER_PID")" 2>/dev/null
}

start_server() {
  if server_running; then
    echo "server already running (pid $(cat "$SERVER_PID")) on port ${PORT}"
  else
    echo "starting prefect server on 127.0.0.1:${PORT} (log: $SERVER_LOG)"
    # The server must not point at itself through PREFECT_API_URL. Concurrency leases (global, tag and
    # deployment limits) go to files under $PREFECT_HOME/concurrency_leases instead of memory, so a server
    # restart keeps them and its repossessor service (on by default) still frees the slots of holders
    # that died.
    env -u PREFECT_API_URL \
      PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem \
      PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED=true \
      nohup "$PREFECT" server start --host 127.0.0.1 --port "$PORT" \
      >"$SERVER_LOG" 2>&1 &
    echo $! >"$SERVER_PID"
  fi
  for _ in $(seq 1 180); do
    if "$PY" -c "import sys, httpx; sys.exit(httpx.get('${PREFECT_API_URL}/health', timeout=2).status_code != 200)" 2>/dev/null; then
      echo "server healthy: http://127.0.0.1:${PORT}"
      return 0
    fi
    if ! server_running; then
      echo "server exited; last lines of $SERVER_LOG:" >&2
      tail -n 40 "$SERVER_LOG" >&2
      return 1
    fi
    sleep 1
  done
  echo "server not healthy after 180 s (see $SERVER_LOG)" >&2
  return 1
}

deploy() {
  "$PY" -m deployments.setup
  "$PREFECT" --no-prompt deploy --all
}

worker() {
  exec "$PREFECT" worker start --pool lvm-process --type process --name "lvm-worker-$(hostname)"
}

stop() {
  if server_running; then
    kill "$(cat "$SERVER_PID")" && echo "stopped server (pid $(cat "$SERVER_PID"))"
  else
    echo "no server started by this script is running"
  fi
  rm -f "$SERVER_PID"
}

case "${1:-up}" in
  up) start_server; deploy; worker ;;
  server) start_server ;;
  deploy) deploy ;;
  worker) worker ;;
  stop) stop ;;
  status) if server_running; then echo "server running (pid $(cat "$SERVER_PID")), ${PREFECT_API_URL}"; else echo "server not running"; fi ;;
  *) echo "usage: $0 [up|server|deploy|worker|stop|status]" >&2; exit 2 ;;
esac
