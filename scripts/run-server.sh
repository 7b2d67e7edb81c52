#!/usr/bin/env bash
# The Prefect server behind `make run`: started once in the background with Prefect's own
# `prefect server start --background` (API and UI on loopback), reused by every later `make run`,
# stopped by `make stop` (`prefect server stop`, then waits until its process is gone).
#
#   scripts/run-server.sh start   reuse this checkout's server if it is up, else start it; wait for
#                                 /api/health; print the UI URL. Exit 1 with one line when it cannot.
#   scripts/run-server.sh stop    stop it; nothing to do when it is not running.
#
# Settings (environment): DBTFLOW_SERVER_HOME (the server's PREFECT_HOME: its SQLite database,
# server.pid and concurrency leases; default .dbtflow/prefect-home, git-ignored) and
# DBTFLOW_SERVER_PORT (default 4201; 4200 is `make deploy-local`'s). The Makefile passes both and
# points the run at http://127.0.0.1:$DBTFLOW_SERVER_PORT/api with the same PREFECT_HOME.
#
# Pitfalls
# - "Ours" means: the pid in $DBTFLOW_SERVER_HOME/server.pid (written by Prefect) is alive and is
#   Prefect's uvicorn on this port. Anything else answering on the port is someone else's: we fail
#   rather than send this checkout's runs to it.
# - A background server's own output goes nowhere (Prefect pipes it to the exited CLI); when it
#   does not come up, the error names the foreground command that shows why.
# - It runs in its own session (setsid), so a Ctrl-C of the `make run` that started it spares it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/.venv/bin"
HOME_DIR=$(mkdir -p "${DBTFLOW_SERVER_HOME:-$ROOT/.dbtflow/prefect-home}" &&
  cd "${DBTFLOW_SERVER_HOME:-$ROOT/.dbtflow/prefect-home}" && pwd)
PORT=${DBTFLOW_SERVER_PORT:-4201}
URL="http://127.0.0.1:$PORT"
PID_FILE="$HOME_DIR/server.pid"
START_TIMEOUT_S=180
SETSID=$(command -v setsid || true) # util-linux; macOS has none (the server then shares make's Ctrl-C)

export PREFECT_HOME="$HOME_DIR"
export PREFECT_API_URL="$URL/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false

pid() { [[ -s "$PID_FILE" ]] && cat "$PID_FILE"; }

# the command line of this checkout's server, if it runs: Prefect's pid file names a live uvicorn of Prefect's app
server_args() {
  local p args
  p=$(pid) || return 1
  if [[ -r "/proc/$p/cmdline" ]]; then # Linux (no procps needed); elsewhere ps
    args=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || return 1
  else
    args=$(ps -o args= -p "$p" 2>/dev/null) || return 1
  fi
  [[ "$args" == *"prefect.server.api.server:create_app"* ]] && echo "$args"
}

ours() { local args; args=$(server_args) && [[ "$args" == *"--port $PORT "* ]]; }

port_taken() { (: <"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# wait until /api/health answers 200, or the server's process is gone, or the timeout
wait_healthy() {
  "$BIN/python" - "$URL/api/health" "$1" "$START_TIMEOUT_S" <<'EOF'
import os, sys, time, urllib.request
url, pid, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)
    time.sleep(0.25)
sys.exit(1)
EOF
}

start() {
  local how=reused
  if ! ours; then
    if server_args >/dev/null; then
      echo "error: this checkout's Prefect server runs on another port ($(server_args | grep -o -- '--port [0-9]*')); stop it first: make stop" >&2
      exit 1
    fi
    if port_taken; then
      echo "error: port $PORT on 127.0.0.1 is taken by another program, not this checkout's Prefect server; stop it, or use another port: make run DBTFLOW_SERVER_PORT=<port>" >&2
      exit 1
    fi
    rm -f "$PID_FILE" # stale: its process is gone (a reboot, a kill)
    # Concurrency leases on disk: a restarted server must not forget a held slot (docs/reliability.md).
    PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$HOME_DIR/prefect.db" \
      PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem \
      $SETSID "$BIN/prefect" server start --background --host 127.0.0.1 --port "$PORT" \
      </dev/null >"$HOME_DIR/start.log" 2>&1 ||
      { echo "error: prefect server start failed: $(grep -m1 -iE 'error|already|in use' "$HOME_DIR/start.log" || tail -1 "$HOME_DIR/start.log")" >&2; exit 1; }
    how=started
    echo "starting the Prefect server on $URL (once; later runs reuse it)"
  fi
  if ! wait_healthy "$(pid)"; then
    echo "error: the Prefect server on $URL did not answer within ${START_TIMEOUT_S} s; see why with: PREFECT_HOME=$HOME_DIR $BIN/prefect server start --port $PORT (after make stop)" >&2
    exit 1
  fi
  echo "Prefect UI: $URL (server pid $(pid), $how; make stop stops it)"
}

stop() {
  local p
  if ! server_args >/dev/null; then
    rm -f "$PID_FILE"
    echo "no Prefect server of this checkout is running"
    return
  fi
  p=$(pid)
  "$BIN/prefect" server stop >/dev/null
  for _ in $(seq 80); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  echo "stopped the Prefect server (pid $p)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
