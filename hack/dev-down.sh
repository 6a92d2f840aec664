#!/usr/bin/env bash
# Stops every process of a local environment started by hack/dev-up.sh (and any
# extra mailpit started into the same DIR), then removes its data.
#
# Usage: hack/dev-down.sh [DIR] [--purge]   (default .cache/dev/env)
#   --purge  remove DIR entirely (logs, keys, kubeconfig) instead of only the data
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=dev-down
. "$ROOT/hack/lib.sh"
dir="" purge=""
for arg in "$@"; do
  case $arg in
    --purge) purge=1 ;;
    *) dir=$arg ;;
  esac
done
dir=${dir:-$ROOT/.cache/dev/env}
[ -d "$dir" ] || { log "nothing running in $dir"; exit 0; }
if [ -f "$dir/owner-watch.pid" ]; then
  watcher=$(cat "$dir/owner-watch.pid")
  [ "$watcher" = "$$" ] || kill "$watcher" 2>/dev/null || true
  rm -f "$dir/owner-watch.pid"
fi
stop_all "$dir"
if [ -n "$purge" ]; then rm -rf "$dir"; else rm -rf "$dir/etcd" "$dir"/*.db "$dir"/*.db-*; fi
log "stopped the environment in $dir"
