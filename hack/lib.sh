# Shared helpers for the local-environment scripts in hack/. Sourced, not run.

log() { printf '[%s] %s\n' "${LOG_TAG:-dev}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A free TCP port on 127.0.0.1, chosen by the kernel.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# The directory with the built tools, or a clear error naming the missing one.
tools_bin() {
  local bin=${MAILROOM_TOOLS_BIN:-$ROOT/.cache/tools/bin}
  local t
  for t in "$@"; do
    [ -x "$bin/$t" ] || die "$t not found in $bin: run 'make tools' (or hack/build-tools.sh) first"
  done
  echo "$bin"
}

# start <dir> <name> <command...>: runs a command in its own session, logging
# to <dir>/logs/<name>.log, recording its pid in <dir>/pids/<name>.pid and its
# command line in <dir>/cmd/<name> (for hack/restart.sh).
start() {
  local dir=$1 name=$2; shift 2
  mkdir -p "$dir/logs" "$dir/pids" "$dir/cmd"
  printf '%q ' "$@" > "$dir/cmd/$name"
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$dir/pids/$name.pid"
}

# stop_one <dir> <name> [signal]: stops one recorded process and waits for it.
stop_one() {
  local dir=$1 name=$2 signal=${3:-TERM} pid
  [ -f "$dir/pids/$name.pid" ] || return 0
  pid=$(cat "$dir/pids/$name.pid")
  kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$dir/pids/$name.pid"
}

# wait_for <what> <seconds> <dir> <name> <command...>: retries a probe until it
# succeeds; fails with the tail of the component's log if it never does or if
# the process exits first.
wait_for() {
  local what=$1 seconds=$2 dir=$3 name=$4; shift 4
  local deadline=$((SECONDS + seconds)) pid
  pid=$(cat "$dir/pids/$name.pid")
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$dir/logs/$name.log" >&2
      die "$name exited before $what answered (log: $dir/logs/$name.log)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 20 "$dir/logs/$name.log" >&2
      die "$what did not answer within ${seconds}s (log: $dir/logs/$name.log)"
    fi
    sleep 0.2
  done
}

# stop_all <dir>: stops every process recorded under <dir>/pids, TERM first,
# KILL after 10 s, and removes the pid files.
stop_all() {
  local dir=$1 f pid
  [ -d "$dir/pids" ] || return 0
  for f in "$dir"/pids/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 10))
  for f in "$dir"/pids/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}
