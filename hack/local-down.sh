#!/usr/bin/env bash
# Stops what `make up` started: the manager first, then the control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCAL=.local

# stop NAME SECONDS: SIGTERM the process in .local/NAME.pid, SIGKILL it if it
# has not exited after SECONDS.
stop() {
  local pidfile=$LOCAL/$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq $(($2 * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$1 did not stop in $2s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "Stopped $1 (pid $pid)"
  fi
  rm -f "$pidfile"
}

stop manager 15
stop controlplane 60
rm -f $LOCAL/kubeconfig
