#!/usr/bin/env bash
# Restarts one component of a local environment with its recorded command
# line (same ports, same data), for fault tests: stop it, optionally stay down
# for a while, start it again, and wait until it answers.
#
# Usage: hack/restart.sh DIR NAME [--down SECONDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=restart
. "$ROOT/hack/lib.sh"
dir=$1 name=$2 down=0
[ "${3:-}" = "--down" ] && down=${4:-0}
[ -f "$dir/cmd/$name" ] || die "no recorded command for $name in $dir"
stop_one "$dir" "$name"
log "$name stopped; down for ${down}s"
sleep "$down"
eval "start \"\$dir\" \"\$name\" $(cat "$dir/cmd/$name")"
case $name in
  kube-apiserver)
    port=$(grep -o -- '--secure-port=[0-9]*' "$dir/cmd/$name" | cut -d= -f2)
    pki=$dir/pki
    wait_for "kube-apiserver /readyz" 90 "$dir" "$name" \
      curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "https://127.0.0.1:$port/readyz"
    ;;
  *)
    port=$(grep -o -- '--smtp 127.0.0.1:[0-9]*' "$dir/cmd/$name" | grep -o '[0-9]*$' || true)
    [ -z "$port" ] || wait_for "$name SMTP" 20 "$dir" "$name" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
    ;;
esac
log "$name is back"
