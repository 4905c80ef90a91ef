#!/usr/bin/env bash
# Runs ON each TPU VM worker (launch/tpu.py sends it there with gcloud ... ssh --worker=all).
#
#   worker.sh install           Python >= 3.11 venv + `pip install -e .[tpu]` of this checkout
#   worker.sh start CMD ARGS... start CMD detached from the ssh session (survives a dropped
#                               connection), output to $RUN_DIR/log, exit code to $RUN_DIR/rc
#   worker.sh follow            print the log until the process ends; exit with its code
#   worker.sh stop              SIGTERM the process (bert_jax checkpoints and exits 0)
#   worker.sh status            "running PID", "exited RC" or "not started"
#
# Paths: the checkout is this script's parent directory; BERT_JAX_VENV (default
# ~/bert_jax_venv) and BERT_JAX_RUN_DIR (default ~/bert_jax_run) can be overridden.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$REPO/launch/worker.sh"
VENV="${BERT_JAX_VENV:-$HOME/bert_jax_venv}"
RUN_DIR="${BERT_JAX_RUN_DIR:-$HOME/bert_jax_run}"

die() { echo "worker.sh: $*" >&2; exit 2; }

running_pid() {
  # The supervisor's pid if it is alive, else nothing.
  local pid
  [[ -f "$RUN_DIR/pid" ]] || return 0
  pid="$(cat "$RUN_DIR/pid")"
  if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

cmd_install() {
  local py=""
  # jax 0.10 needs Python >= 3.11; the TPU images ship Ubuntu 22.04 with 3.10.
  for candidate in python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null; then py="$candidate"; break; fi
  done
  if [[ -z "$py" ]]; then
    sudo apt-get update -q
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11 python3.11-venv
    py=python3.11
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then "$py" -m venv "$VENV"; fi
  "$VENV/bin/python" -m pip install -q -U pip
  "$VENV/bin/python" -m pip install -q -e "${REPO}[${BERT_JAX_EXTRAS:-tpu}]"
  "$VENV/bin/python" -c 'import bert_jax, jax; print("bert_jax ok; jax", jax.__version__)'
}

cmd_start() {
  [[ $# -gt 0 ]] || die "start needs a command, e.g. start python -m bert_jax.main ..."
  local pid
  pid="$(running_pid)"
  [[ -z "$pid" ]] || die "a run is already going (pid $pid); \`worker.sh stop\` ends it."
  mkdir -p "$RUN_DIR"
  rm -f "$RUN_DIR/rc" "$RUN_DIR/log"
  if [[ -f "$VENV/bin/activate" ]]; then
    # shellcheck disable=SC1091  # the venv is created by `install` on the worker.
    source "$VENV/bin/activate"
  fi
  cd "$REPO"
  # setsid + nohup: the run outlives the ssh session that started it.
  setsid nohup bash "$SELF" _supervise "$@" >"$RUN_DIR/log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/pid"
  echo "started pid $! on $(hostname); log: $RUN_DIR/log"
}

cmd_supervise() {
  # Forwards SIGTERM to the run (so it can checkpoint) and records its exit code.
  local child rc trapped=0
  "$@" &
  child=$!
  trap 'trapped=1; kill -TERM "$child" 2>/dev/null || true' TERM INT
  rc=0
  wait "$child" || rc=$?
  while ((trapped)); do  # wait was interrupted by the signal: the run's own code follows.
    trapped=0
    rc=0
    wait "$child" || rc=$?
  done
  echo "$rc" >"$RUN_DIR/rc"
  echo "worker.sh: exited with code $rc"
}

cmd_follow() {
  local pid i
  for ((i = 0; i < 120; i++)); do  # the run may still be starting.
    [[ -f "$RUN_DIR/pid" ]] && break
    sleep 1
  done
  [[ -f "$RUN_DIR/pid" ]] || die "no run started in $RUN_DIR"
  pid="$(cat "$RUN_DIR/pid")"
  tail -n +1 -F --pid="$pid" "$RUN_DIR/log" 2>/dev/null || true
  [[ -f "$RUN_DIR/rc" ]] || die "the run (pid $pid) ended without an exit code: killed?"
  exit "$(cat "$RUN_DIR/rc")"
}

cmd_stop() {
  local pid
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then echo "not running"; return 0; fi
  kill -TERM "$pid"
  echo "sent SIGTERM to pid $pid"
}

cmd_status() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then echo "running $pid"
  elif [[ -f "$RUN_DIR/rc" ]]; then echo "exited $(cat "$RUN_DIR/rc")"
  else echo "not started"; fi
}

[[ $# -gt 0 ]] || die "usage: worker.sh install|start CMD...|follow|stop|status"
sub="$1"
shift
case "$sub" in
  install) cmd_install "$@" ;;
  start) cmd_start "$@" ;;
  _supervise) cmd_supervise "$@" ;;
  follow) cmd_follow "$@" ;;
  stop) cmd_stop "$@" ;;
  status) cmd_status "$@" ;;
  *) die "unknown command '$sub': use install|start|follow|stop|status" ;;
esac
