#!/usr/bin/env bash
# The services of docker/compose.yaml on one machine, from packages, without containers:
#   postgres        Debian's PostgreSQL 15, a private cluster under $LVM_STACK_DIR/postgres (initdb + pg_ctl)
#   prefect-server  `prefect server start` on Postgres (database `prefect`), UI on :4200
#   mlflow          `mlflow server --app-name basic-auth` on Postgres (databases `mlflow`, `mlflow_auth`),
#                   artifacts under $LVM_STACK_DIR/mlartifacts, every request authenticated (:5000)
#   setup           one shot: registry roles and users, `python -m deployments.setup`, `prefect deploy --all`
#   alertmanager    :9093, alertmanager.yml rendered as compose renders it
#   prometheus      :9090, prometheus.yml with the compose service names replaced by this host's ports
#   pushgateway     :9091
#   dask-scheduler  :8786 (dashboard / metrics :8787) and $DASK_WORKERS dask workers (compose: 2 replicas)
#   worker          a Prefect process worker on the pool lvm-process, with the pipeline's registry account
#   serve           `lvm serve` of models:/lvm-amn@champion (:8000), restarted every 10 s until a champion exists
#
# Usage: deployments/stack.sh up|status|down|describe|init-secrets|install-packages
#   up            start what is not running (idempotent); waits until each service answers; first installs the
#                 Debian packages it needs if they are missing (postgresql, prometheus, prometheus-alertmanager,
#                 prometheus-pushgateway; apt-get as root or through sudo; LVM_STACK_NO_APT=1: only say so)
#   install-packages  only that step
#   status        what runs where (pid, address, health)
#   down          stop what `up` started (pid files under $LVM_STACK_DIR/run), nothing else
#   describe      services, ports and the flows' environment as `name=value` lines (tests compare them
#                 with docker/compose.yaml), without starting anything
#   init-secrets  write random secrets to $LVM_STACK_DIR/secrets/ (mode 600) for those not given
#
# Secrets (no defaults: `up` refuses to start without them): each from the environment variable, from a file
# named by <VARIABLE>_FILE, or from $LVM_STACK_DIR/secrets/<VARIABLE>:
#   POSTGRES_PASSWORD, LVM_SERVE_TOKEN, MLFLOW_FLASK_SERVER_SECRET_KEY, MLFLOW_AUTH_ADMIN_PASSWORD,
#   LVM_REGISTRY_PIPELINE_PASSWORD, LVM_REGISTRY_SERVICE_PASSWORD, LVM_REGISTRY_OPERATOR_PASSWORD
# Passwords never appear on a command line or in a log: Postgres clients read $LVM_STACK_DIR/secrets/pgpass,
# MLflow clients read MLFLOW_TRACKING_PASSWORD_FILE (lvm_core/tracking/auth.py).
#
# Settings: LVM_STACK_DIR (default .stack in the checkout), LVM_STACK_HOST (address every service binds,
# default 127.0.0.1), POSTGRES_PORT 5432, PREFECT_PORT 4200, MLFLOW_PORT 5000, SERVE_PORT 8000,
# PROMETHEUS_PORT 9090, ALERTMANAGER_PORT 9093, PUSHGATEWAY_PORT 9091, DASK_SCHEDULER_PORT 8786,
# DASK_DASHBOARD_PORT 8787, DASK_WORKERS 2, PYTHON (default .venv/bin/python), LVM_STACK_DEPLOYMENTS (names of
# prefect.yaml's deployments to create; default all), and compose's LVM_* settings
# (LVM_ALERT_WEBHOOK_URL, LVM_ALERT_ROUTING_KEY, LVM_ZOMBIE_WINDOW_SECONDS, LVM_SNAPSHOT_SOURCE, ...).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"

STATE="${LVM_STACK_DIR:-$REPO_DIR/.stack}"
HOST="${LVM_STACK_HOST:-127.0.0.1}"
# Clients reach a wildcard bind through loopback.
case "$HOST" in 0.0.0.0|::|"") CLIENT_HOST=127.0.0.1 ;; *) CLIENT_HOST="$HOST" ;; esac
POSTGRES_PORT="${POSTGRES_PORT:-5432}"
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
SERVE_PORT="${SERVE_PORT:-8000}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9093}"
PUSHGATEWAY_PORT="${PUSHGATEWAY_PORT:-9091}"
DASK_SCHEDULER_PORT="${DASK_SCHEDULER_PORT:-8786}"
DASK_DASHBOARD_PORT="${DASK_DASHBOARD_PORT:-8787}"
DASK_WORKERS="${DASK_WORKERS:-2}"
PY="${PYTHON:-$REPO_DIR/.venv/bin/python}"
BIN="$(dirname "$PY")"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
PROM_DIR="$REPO_DIR/docker/prometheus"
MODEL="${LVM_SERVE_MODEL:-models:/lvm-amn@champion}"
STARTUP_TIMEOUT="${LVM_STACK_TIMEOUT:-300}"

# Registry accounts (lvm_core/tracking/auth.py defines what each role may do).
ADMIN_USER=lvm-admin
PIPELINE_USER=lvm-pipeline
SERVICE_USER=lvm-service
SECRETS=(POSTGRES_PASSWORD LVM_SERVE_TOKEN MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_AUTH_ADMIN_PASSWORD
         LVM_REGISTRY_PIPELINE_PASSWORD LVM_REGISTRY_SERVICE_PASSWORD LVM_REGISTRY_OPERATOR_PASSWORD)

RUN="$STATE/run"; LOGS="$STATE/log"; SEC="$STATE/secrets"; PGDATA="$STATE/postgres/data"
# Compose's arguments (`describe` prints them for the parity test); `up` adds this host's binds.
MLFLOW_ARGS=(--app-name basic-auth --host "$HOST" --port "$MLFLOW_PORT"
             --backend-store-uri "postgresql+psycopg://lvm@$CLIENT_HOST:$POSTGRES_PORT/mlflow"
             --artifacts-destination "$STATE/mlartifacts")
DASK_WORKER_ARGS=(--nthreads 1 --memory-limit 4GiB)

die() { echo "stack: $*" >&2; exit 1; }

# --- secrets ------------------------------------------------------------------------------------------

# The file holding secret $1 (written from the environment when given there), or failure.
secret_file() {
  local name="$1" file_var="${1}_FILE"
  if [[ -n "${!name:-}" ]]; then
    (umask 077; printf '%s' "${!name}" >"$SEC/$name.env")
    echo "$SEC/$name.env"
  elif [[ -n "${!file_var:-}" ]]; then
    [[ -r "${!file_var}" ]] || die "$file_var=${!file_var}: not readable"
    echo "${!file_var}"
  elif [[ -s "$SEC/$name" ]]; then
    echo "$SEC/$name"
  else
    return 1
  fi
}

secret() { local f; f="$(secret_file "$1")" && tr -d '\n' <"$f"; }

check_secrets() {
  local missing=()
  for name in "${SECRETS[@]}"; do secret_file "$name" >/dev/null || missing+=("$name"); done
  if [[ ${#missing[@]} -gt 0 ]]; then
    die "no ${missing[*]}: set each (or <NAME>_FILE), or run '$0 init-secrets' to generate them under $SEC"
  fi
  local short=()
  for name in MLFLOW_AUTH_ADMIN_PASSWORD LVM_REGISTRY_PIPELINE_PASSWORD LVM_REGISTRY_SERVICE_PASSWORD \
              LVM_REGISTRY_OPERATOR_PASSWORD; do
    [[ "$(secret "$name" | wc -c)" -ge 12 ]] || short+=("$name")
  done
  [[ ${#short[@]} -eq 0 ]] || die "${short[*]}: MLflow needs passwords of at least 12 characters"
}

init_secrets() {
  mkdir -p "$SEC"; chmod 700 "$SEC"
  for name in "${SECRETS[@]}"; do
    if secret_file "$name" >/dev/null; then
      echo "$name: given"
    else
      (umask 077; "$PY" -c "import secrets; print(secrets.token_urlsafe(24), end='')" >"$SEC/$name")
      echo "$name: generated in $SEC/$name"
    fi
  done
}

# --- the flows' environment (compose's x-lvm-env) -----------------------------------------------------

lvm_env() {
  cat <<EOF
PREFECT_API_URL=http://$CLIENT_HOST:$PREFECT_PORT/api
PREFECT_SERVER_ANALYTICS_ENABLED=false
MLFLOW_TRACKING_URI=http://$CLIENT_HOST:$MLFLOW_PORT
LVM_DATA_DIR=$STATE/data
LVM_REPO_DIR=$REPO_DIR
HF_HUB_OFFLINE=1
PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30
LVM_ZOMBIE_WINDOW_SECONDS=${LVM_ZOMBIE_WINDOW_SECONDS:-}
LVM_SNAPSHOT_SOURCE=${LVM_SNAPSHOT_SOURCE:-}
LVM_ALERT_WEBHOOK_URL=${LVM_ALERT_WEBHOOK_URL:-}
LVM_ALERT_ROUTING_KEY=${LVM_ALERT_ROUTING_KEY:-}
LVM_DASK_ADDRESS=${LVM_DASK_ADDRESS:-tcp://$CLIENT_HOST:$DASK_SCHEDULER_PORT}
LVM_EMBED_RESOURCES=${LVM_EMBED_RESOURCES:-}
LVM_CACHE_DIR=$STATE/cache
LVM_WORK_URL=${LVM_WORK_URL:-}
LVM_LOCAL_DATA_DIR=$STATE/cache/data
LVM_SERVED_CONTEXTS=${LVM_SERVED_CONTEXTS:-$STATE/data/served/contexts.npy}
LVM_PUSHGATEWAY_URL=http://$CLIENT_HOST:$PUSHGATEWAY_PORT
LVM_SERVE_URL=http://$CLIENT_HOST:$SERVE_PORT
LVM_SERVE_TOKEN_FILE=$SEC/LVM_SERVE_TOKEN
LVM_PRODUCTION=1
EOF
}

prefect_server_env() {
  cat <<EOF
PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://lvm@$CLIENT_HOST:$POSTGRES_PORT/prefect
PREFECT_SERVER_ANALYTICS_ENABLED=false
PREFECT_UI_API_URL=${PREFECT_UI_API_URL:-http://$CLIENT_HOST:$PREFECT_PORT/api}
PREFECT_HOME=$STATE/prefect-home
PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem
PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED=true
EOF
}

# `describe`: one line per service (service NAME PORT...) and per setting (NAME.env KEY=VALUE).
describe() {
  echo "service postgres $POSTGRES_PORT"
  echo "service prefect-server $PREFECT_PORT"
  echo "service mlflow $MLFLOW_PORT"
  echo "service setup"
  echo "service worker"
  echo "service dask-scheduler $DASK_SCHEDULER_PORT $DASK_DASHBOARD_PORT"
  echo "service dask-worker x$DASK_WORKERS"
  echo "service serve $SERVE_PORT"
  echo "service pushgateway $PUSHGATEWAY_PORT"
  echo "service prometheus $PROMETHEUS_PORT"
  echo "service alertmanager $ALERTMANAGER_PORT"
  echo "bind $HOST"
  lvm_env | sed 's/^/lvm.env /'
  prefect_server_env | sed 's/^/prefect-server.env /'
  echo "mlflow.args ${MLFLOW_ARGS[*]}"
  echo "dask-worker.args ${DASK_WORKER_ARGS[*]}"
}

# --- processes ----------------------------------------------------------------------------------------

pid_of() { [[ -f "$RUN/$1.pid" ]] && cat "$RUN/$1.pid"; }

running() {
  local pid
  pid="$(pid_of "$1")" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A recycled pid is not ours: the process must still be the one whose start time we noted.
  [[ "$(proc_start "$pid")" == "$(cat "$RUN/$1.start" 2>/dev/null)" ]]
}

proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

# start NAME ENVFILE CMD...: a process group of its own (down stops the whole group), log under $LOGS.
start() {
  local name="$1" envfile="$2"; shift 2
  if running "$name"; then
    echo "$name: already running (pid $(pid_of "$name"))"
    return 0
  fi
  (
    set -a
    # shellcheck disable=SC1090
    [[ -n "$envfile" ]] && source "$envfile"
    set +a
    exec setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null
  ) &
  local pid=$!
  echo "$pid" >"$RUN/$name.pid"
  sleep 0.2
  proc_start "$pid" >"$RUN/$name.start"
  echo "$name: started (pid $pid, log $LOGS/$name.log)"
}

# stop NAME...: TERM to every group at once, up to 20 s for all to end, then KILL what is left.
stop() {
  local name pid names=() pids=()
  for name in "$@"; do
    if running "$name"; then
      pid="$(pid_of "$name")"; names+=("$name"); pids+=("$pid")
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.start"
  done
  local left
  for _ in $(seq 1 100); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    ((left)) || break
    sleep 0.2
  done
  local i
  for i in "${!names[@]}"; do
    kill -KILL -- "-${pids[$i]}" 2>/dev/null || true
    echo "${names[$i]}: stopped (pid ${pids[$i]})"
  done
  for name in "$@"; do rm -f "$RUN/$name.pid"; done
}

wait_http() {  # NAME URL: until URL answers 2xx, the process dies, or the timeout passes
  local name="$1" url="$2" deadline=$((SECONDS + STARTUP_TIMEOUT))
  while ((SECONDS < deadline)); do
    curl -fsS -o /dev/null --max-time 3 "$url" 2>/dev/null && return 0
    if [[ -f "$RUN/$name.pid" ]] && ! running "$name"; then
      tail -n 30 "$LOGS/$name.log" >&2; die "$name exited (log: $LOGS/$name.log)"
    fi
    sleep 1
  done
  tail -n 30 "$LOGS/$name.log" >&2
  die "$name not answering at $url after ${STARTUP_TIMEOUT}s"
}

# --- PostgreSQL ---------------------------------------------------------------------------------------

# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` account.
as_pg() { if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_running() { [[ -f "$PGDATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

start_postgres() {
  [[ -x "$PG_BIN/pg_ctl" ]] || die "PostgreSQL not installed (Debian: apt-get install postgresql)"
  local pwfile; pwfile="$(secret_file POSTGRES_PASSWORD)"
  # libpq and asyncpg read the password from here: no password in a URL, a command line or a log.
  (umask 077; printf '*:*:*:lvm:%s\n' "$(secret POSTGRES_PASSWORD)" >"$SEC/pgpass")
  if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
    mkdir -p "$STATE/postgres"
    [[ $EUID -eq 0 ]] && chown postgres: "$STATE/postgres"
    as_pg test -w "$STATE/postgres" || die "the postgres account cannot reach $STATE/postgres (a folder above it is private): choose another LVM_STACK_DIR"
    local tmp="$STATE/postgres/pw"
    (umask 077; tr -d '\n' <"$pwfile" >"$tmp")
    [[ $EUID -eq 0 ]] && chown postgres: "$tmp"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U lvm --pwfile="$tmp" -A scram-sha-256 -E UTF8 --no-instructions \
      >>"$LOGS/postgres.log" 2>&1 || { rm -f "$tmp"; tail -n 20 "$LOGS/postgres.log" >&2; die "initdb failed"; }
    rm -f "$tmp"
  fi
  if pg_running; then
    echo "postgres: already running (pid $(head -n 1 "$PGDATA/postmaster.pid"))"
  else
    [[ $EUID -eq 0 ]] && { touch "$LOGS/postgres.log"; chown postgres: "$LOGS/postgres.log"; }
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 60 \
      -o "-h $HOST -p $POSTGRES_PORT -k $STATE/postgres" start >/dev/null \
      || { tail -n 20 "$LOGS/postgres.log" >&2; die "postgres did not start"; }
    echo "postgres: started on $HOST:$POSTGRES_PORT (data $PGDATA)"
  fi
  touch "$RUN/postgres.started"
  # The databases of docker/postgres-init/ (and compose's POSTGRES_DB): created once.
  local db
  for db in prefect mlflow mlflow_auth; do
    if [[ -z "$(psql_lvm postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
      psql_lvm postgres -qc "CREATE DATABASE $db" && echo "postgres: created database $db"
    fi
  done
}

psql_lvm() { local db="$1"; shift; PGPASSFILE="$SEC/pgpass" "$PG_BIN/psql" -h "$CLIENT_HOST" -p "$POSTGRES_PORT" -U lvm -d "$db" -v ON_ERROR_STOP=1 "$@"; }

stop_postgres() {
  if [[ -f "$RUN/postgres.started" ]] && pg_running; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null && echo "postgres: stopped"
  fi
  rm -f "$RUN/postgres.started"
}

# --- configuration files ------------------------------------------------------------------------------

write_env_files() {
  {
    lvm_env
    echo "PGPASSFILE=$SEC/pgpass"
  } >"$RUN/lvm.env"
  # Each registry account reads its password from a file (lvm_core/tracking/auth.py).
  { cat "$RUN/lvm.env"; echo "MLFLOW_TRACKING_USERNAME=$PIPELINE_USER"
    echo "MLFLOW_TRACKING_PASSWORD_FILE=$(secret_file LVM_REGISTRY_PIPELINE_PASSWORD)"; } >"$RUN/pipeline.env"
  { cat "$RUN/lvm.env"; echo "MLFLOW_TRACKING_USERNAME=$SERVICE_USER"
    echo "MLFLOW_TRACKING_PASSWORD_FILE=$(secret_file LVM_REGISTRY_SERVICE_PASSWORD)"; } >"$RUN/service.env"
  { prefect_server_env; echo "PGPASSFILE=$SEC/pgpass"; echo "HF_HUB_OFFLINE=1"; } >"$RUN/prefect-server.env"
  cat >"$RUN/mlflow.env" <<EOF
PGPASSFILE=$SEC/pgpass
MLFLOW_AUTH_CONFIG_PATH=$RUN/mlflow-auth.ini
MLFLOW_AUTH_ADMIN_USERNAME=$ADMIN_USER
MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret MLFLOW_FLASK_SERVER_SECRET_KEY)
MLFLOW_AUTH_ADMIN_PASSWORD=$(secret MLFLOW_AUTH_ADMIN_PASSWORD)
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
MLFLOW_DISABLE_TELEMETRY=true
EOF
  chmod 600 "$RUN/mlflow.env"
  # Everyone must authenticate; what each account may do comes from its role (setup).
  cat >"$RUN/mlflow-auth.ini" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = postgresql+psycopg://lvm@$CLIENT_HOST:$POSTGRES_PORT/mlflow_auth
admin_username = $ADMIN_USER
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
  "$PY" -m deployments.stack.render --state "$STATE" --host "$CLIENT_HOST" --prometheus-dir "$PROM_DIR" \
    --serve-port "$SERVE_PORT" --pushgateway-port "$PUSHGATEWAY_PORT" --dask-dashboard-port "$DASK_DASHBOARD_PORT" \
    --alertmanager-port "$ALERTMANAGER_PORT" --prometheus-port "$PROMETHEUS_PORT"
}

tool() { local c; for c in "$@"; do command -v "$c" && return 0; done; die "none of $* installed (Debian packages: prometheus, prometheus-alertmanager, prometheus-pushgateway)"; }

# The Debian packages the stack runs (as .ci/run installs them), each with a file that shows it is there.
missing_packages() {
  local missing=()
  [[ -x "$PG_BIN/pg_ctl" ]] || missing+=(postgresql)
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)
  { command -v prometheus-alertmanager || command -v alertmanager; } >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
  { command -v prometheus-pushgateway || command -v pushgateway; } >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
  echo "${missing[*]}"
}

# Installs what is missing with apt-get (as root, or through sudo); LVM_STACK_NO_APT=1 only reports it.
install_packages() {
  local missing; missing="$(missing_packages)"
  [[ -z "$missing" ]] && return 0
  local sudo=""
  [[ $EUID -eq 0 ]] || sudo="sudo"
  if [[ -n "${LVM_STACK_NO_APT:-}" ]] || ! command -v apt-get >/dev/null 2>&1 || { [[ -n "$sudo" ]] && ! command -v sudo >/dev/null 2>&1; }; then
    die "missing Debian packages: $missing (apt-get install $missing)"
  fi
  echo "stack: installing Debian packages: $missing"
  # shellcheck disable=SC2086  # one word per package
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null \
    || die "apt-get install $missing failed"
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
}

# --- commands -----------------------------------------------------------------------------------------

up() {
  install_packages
  mkdir -p "$RUN" "$LOGS" "$SEC" "$STATE/data" "$STATE/cache" "$STATE/mlartifacts" "$STATE/prefect-home"
  chmod 700 "$SEC" "$RUN"
  [[ $EUID -eq 0 ]] && chmod 755 "$STATE"  # the postgres account must reach its folder
  check_secrets
  write_env_files
  start_postgres

  start prefect-server "$RUN/prefect-server.env" "$BIN/prefect" server start --host "$HOST" --port "$PREFECT_PORT"
  start mlflow "$RUN/mlflow.env" "$BIN/mlflow" server "${MLFLOW_ARGS[@]}" --workers 1 \
    --allowed-hosts "localhost,localhost:*,127.0.0.1,127.0.0.1:*,$CLIENT_HOST,$CLIENT_HOST:*"
  start alertmanager "" "$(tool alertmanager prometheus-alertmanager)" --config.file="$RUN/alertmanager.yml" \
    --storage.path="$STATE/alertmanager" --web.listen-address="$HOST:$ALERTMANAGER_PORT" --cluster.listen-address=
  start pushgateway "" "$(tool pushgateway prometheus-pushgateway)" --web.listen-address="$HOST:$PUSHGATEWAY_PORT"
  start prometheus "" "$(tool prometheus)" --config.file="$RUN/prometheus.yml" --storage.tsdb.path="$STATE/prometheus" \
    --storage.tsdb.retention.time=30d --web.listen-address="$HOST:$PROMETHEUS_PORT"
  start dask-scheduler "$RUN/lvm.env" "$BIN/dask" scheduler --host "$HOST" --port "$DASK_SCHEDULER_PORT" \
    --dashboard-address "$HOST:$DASK_DASHBOARD_PORT"
  local i
  for i in $(seq 1 "$DASK_WORKERS"); do
    start "dask-worker-$i" "$RUN/lvm.env" "$BIN/dask" worker "tcp://$CLIENT_HOST:$DASK_SCHEDULER_PORT" \
      "${DASK_WORKER_ARGS[@]}" --host "$HOST" --dashboard-address "$HOST:0" --name "dask-worker-$i"
  done

  wait_http prefect-server "http://$CLIENT_HOST:$PREFECT_PORT/api/health"
  wait_http mlflow "http://$CLIENT_HOST:$MLFLOW_PORT/health"
  wait_http alertmanager "http://$CLIENT_HOST:$ALERTMANAGER_PORT/-/ready"
  wait_http prometheus "http://$CLIENT_HOST:$PROMETHEUS_PORT/-/ready"
  wait_http pushgateway "http://$CLIENT_HOST:$PUSHGATEWAY_PORT/-/ready"
  wait_http dask-scheduler "http://$CLIENT_HOST:$DASK_DASHBOARD_PORT/health"

  # setup (compose's one-shot job): registry roles and accounts, then Prefect's pool, blocks and deployments.
  if [[ ! -f "$RUN/setup.done" ]]; then
    echo "setup: registry roles, work pool, automations, deployments (log $LOGS/setup.log)"
    {
      MLFLOW_TRACKING_URI="http://$CLIENT_HOST:$MLFLOW_PORT" "$PY" -m deployments.stack.registry \
        --admin-user "$ADMIN_USER" --admin-password-file "$(secret_file MLFLOW_AUTH_ADMIN_PASSWORD)" \
        --pipeline-password-file "$(secret_file LVM_REGISTRY_PIPELINE_PASSWORD)" \
        --service-password-file "$(secret_file LVM_REGISTRY_SERVICE_PASSWORD)" \
        --operator-password-file "$(secret_file LVM_REGISTRY_OPERATOR_PASSWORD)"
      local deploy=(--all) name
      if [[ -n "${LVM_STACK_DEPLOYMENTS:-}" ]]; then
        deploy=(); for name in $LVM_STACK_DEPLOYMENTS; do deploy+=(--name "$name"); done
      fi
      (set -a; source "$RUN/pipeline.env"; set +a; "$PY" -m deployments.setup && "$BIN/prefect" --no-prompt deploy "${deploy[@]}")
    } >>"$LOGS/setup.log" 2>&1 || { tail -n 30 "$LOGS/setup.log" >&2; die "setup failed (log $LOGS/setup.log)"; }
    touch "$RUN/setup.done"
  fi

  start worker "$RUN/pipeline.env" "$BIN/prefect" worker start --pool lvm-process --type process --name lvm-worker-stack
  # Like compose's `restart: unless-stopped`: until a champion exists `lvm serve` exits; try again in 10 s.
  start serve "$RUN/service.env" bash -c "while true; do '$BIN/lvm' serve --host '$HOST' --port '$SERVE_PORT' \
    --model '$MODEL'; sleep 10; done"
  echo "stack up: Prefect UI http://$CLIENT_HOST:$PREFECT_PORT, MLflow http://$CLIENT_HOST:$MLFLOW_PORT, state $STATE"
}

health() {  # URL: "up" or "not answering"
  if curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; then echo "up"; else echo "not answering"; fi
}

status() {
  printf '%-16s %-8s %-28s %s\n' SERVICE PID ADDRESS HEALTH
  local pgpid="-" pgstate="stopped"
  if pg_running; then pgpid="$(head -n 1 "$PGDATA/postmaster.pid")"; pgstate="up"; fi
  printf '%-16s %-8s %-28s %s\n' postgres "$pgpid" "$HOST:$POSTGRES_PORT" "$pgstate"
  local row name addr url
  for row in "prefect-server $PREFECT_PORT /api/health" "mlflow $MLFLOW_PORT /health" \
             "alertmanager $ALERTMANAGER_PORT /-/ready" "prometheus $PROMETHEUS_PORT /-/ready" \
             "pushgateway $PUSHGATEWAY_PORT /-/ready" "dask-scheduler $DASK_DASHBOARD_PORT /health" \
             "serve $SERVE_PORT /readyz"; do
    read -r name addr url <<<"$row"
    if running "$name"; then
      printf '%-16s %-8s %-28s %s\n' "$name" "$(pid_of "$name")" "$HOST:$addr" "$(health "http://$CLIENT_HOST:$addr$url")"
    else
      printf '%-16s %-8s %-28s %s\n' "$name" - "$HOST:$addr" stopped
    fi
  done
  for name in worker $(cd "$RUN" 2>/dev/null && ls dask-worker-*.pid 2>/dev/null | sed 's/\.pid$//'); do
    if running "$name"; then
      printf '%-16s %-8s %-28s %s\n' "$name" "$(pid_of "$name")" - running
    else
      printf '%-16s %-8s %-28s %s\n' "$name" - - stopped
    fi
  done
  echo "state: $STATE"
}

down() {
  [[ -d "$RUN" ]] || { echo "nothing started from $STATE"; return 0; }
  # The clients first (their last writes reach the servers), then the servers, then the database.
  stop serve worker $(cd "$RUN" && ls dask-worker-*.pid 2>/dev/null | sed 's/\.pid$//')
  stop dask-scheduler prometheus pushgateway alertmanager mlflow prefect-server
  stop_postgres
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  down) down ;;
  describe) describe ;;
  init-secrets) init_secrets ;;
  install-packages) install_packages ;;
  *) echo "usage: $0 up|status|down|describe|init-secrets|install-packages" >&2; exit 2 ;;
esac
