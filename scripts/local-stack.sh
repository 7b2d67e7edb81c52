#!/usr/bin/env bash
# The local Prefect stack: a server on loopback, a process work pool and its worker, and the
# deployment `dbt_wg` with its schedules, deployed from prefect.yaml exactly as on any server.
#
#   scripts/local-stack.sh start    (make deploy-local)   scripts/local-stack.sh stop   (make stop-local)
#
# Settings (environment): DBTFLOW_LOCAL_DIR (state, PIDs, logs; default .prefect-local),
# DBTFLOW_LOCAL_PORT (default 4200), DBTFLOW_WORK_POOL (default local-process),
# DBTFLOW_GIT_REPOSITORY / DBTFLOW_GIT_BRANCH (what each run clones; default this checkout and
# its branch: commit before deploying, a run sees only what is committed).
# The worker runs in its own environment made from uv.lock (as a worker host or image would be);
# each run's pull steps clone the repository and `uv pip install` requirements-prefect.txt into it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/.venv/bin"
LOCAL=$(mkdir -p "${DBTFLOW_LOCAL_DIR:-$ROOT/.prefect-local}" && cd "${DBTFLOW_LOCAL_DIR:-$ROOT/.prefect-local}" && pwd)
PORT=${DBTFLOW_LOCAL_PORT:-4200}
export DBTFLOW_WORK_POOL=${DBTFLOW_WORK_POOL:-local-process}
export DBTFLOW_GIT_REPOSITORY=${DBTFLOW_GIT_REPOSITORY:-$ROOT}
export DBTFLOW_GIT_BRANCH=${DBTFLOW_GIT_BRANCH:-$(git -C "$ROOT" rev-parse --abbrev-ref HEAD)}
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_HOME="$LOCAL/home"
export PREFECT_SERVER_ANALYTICS_ENABLED=false

running() { [[ -f "$LOCAL/$1.pid" ]] && kill -0 "$(cat "$LOCAL/$1.pid")" 2>/dev/null; }

stop() {
  for name in worker server; do
    if running "$name"; then
      kill -TERM -- "-$(cat "$LOCAL/$name.pid")" 2>/dev/null || kill -TERM "$(cat "$LOCAL/$name.pid")"
      for _ in $(seq 40); do running "$name" || break; sleep 0.5; done
      running "$name" && kill -KILL -- "-$(cat "$LOCAL/$name.pid")" 2>/dev/null || true
      echo "stopped $name (pid $(cat "$LOCAL/$name.pid"))"
    fi
    rm -f "$LOCAL/$name.pid"
  done
}

start() {
  mkdir -p "$LOCAL/home" "$LOCAL/runs" "$LOCAL/work"
  if ! running server; then
    # Leases of concurrency slots on disk (Prefect's default keeps them in memory, so a restarted
    # server would forget them and keep every held slot taken): see docs/reliability.md.
    PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$LOCAL/home/prefect.db" \
      PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem \
      PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS=${PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS:-10} \
      setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" </dev/null >"$LOCAL/server.log" 2>&1 &
    echo $! >"$LOCAL/server.pid"
  fi
  for _ in $(seq 240); do
    curl -sf "$PREFECT_API_URL/health" >/dev/null && break
    running server || { tail -20 "$LOCAL/server.log"; echo "error: the Prefect server did not start" >&2; exit 1; }
    sleep 0.5
  done
  echo "server: http://127.0.0.1:$PORT (pid $(cat "$LOCAL/server.pid"), log $LOCAL/server.log)"

  # The worker's own environment, exactly the lock's runtime (no dev tools), like a worker image.
  UV_PROJECT_ENVIRONMENT="$LOCAL/worker-venv" "$BIN/uv" sync --project "$ROOT" --frozen --no-dev --quiet --compile-bytecode
  "$BIN/prefect" --no-prompt work-pool create "$DBTFLOW_WORK_POOL" --type process --overwrite >/dev/null
  if ! running worker; then
    cd "$LOCAL/work"
    VIRTUAL_ENV="$LOCAL/worker-venv" PATH="$LOCAL/worker-venv/bin:$BIN:$PATH" \
      DBTFLOW_RUNS_DIR="$LOCAL/runs" UV_OFFLINE=${UV_OFFLINE:-1} \
      setsid "$LOCAL/worker-venv/bin/prefect" worker start --pool "$DBTFLOW_WORK_POOL" --type process \
      </dev/null >"$LOCAL/worker.log" 2>&1 &
    echo $! >"$LOCAL/worker.pid"
    cd "$ROOT"
  fi
  echo "worker: pool $DBTFLOW_WORK_POOL (pid $(cat "$LOCAL/worker.pid"), log $LOCAL/worker.log, runs kept in $LOCAL/runs)"

  (cd "$ROOT" && "$BIN/dbtflow" deploy)
  echo "deployed run_dbt_wg/dbt_wg from $DBTFLOW_GIT_REPOSITORY@$DBTFLOW_GIT_BRANCH"
  echo "try: PREFECT_API_URL=$PREFECT_API_URL $BIN/prefect deployment run run_dbt_wg/dbt_wg -p target=local"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
