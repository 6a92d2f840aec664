#!/usr/bin/env bash
# Starts one mailpit (a real SMTP server with a REST API) on free loopback ports.
#
# Usage: hack/mailpit-up.sh DIR NAME [--tls CERT KEY] [--require-starttls]
#                                    [--auth-file FILE] [--] [extra mailpit flags]
# Writes DIR/NAME.env with NAME_SMTP=host:port and NAME_API=http://host:port
# (NAME upper-cased), logs to DIR/logs/NAME.log, and records its pid in
# DIR/pids/NAME.pid so that hack/dev-down.sh DIR stops it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=mailpit
. "$ROOT/hack/lib.sh"

[ $# -ge 2 ] || die "usage: $0 DIR NAME [--tls CERT KEY] [--require-starttls] [--auth-file FILE] [-- flags]"
dir=$1 name=$2; shift 2
flags=()
while [ $# -gt 0 ]; do
  case $1 in
    --tls) flags+=(--smtp-tls-cert "$2" --smtp-tls-key "$3"); shift 3 ;;
    --require-starttls) flags+=(--smtp-require-starttls); shift ;;
    --auth-file) flags+=(--smtp-auth-file "$2"); shift 2 ;;
    --) shift; flags+=("$@"); break ;;
    *) flags+=("$1"); shift ;;
  esac
done

bin=$(tools_bin mailpit)
smtp_port=$(free_port)
api_port=$(free_port)
mkdir -p "$dir"
start "$dir" "$name" "$bin/mailpit" \
  --smtp "127.0.0.1:$smtp_port" --listen "127.0.0.1:$api_port" \
  --database "$dir/$name.db" --disable-version-check --smtp-disable-rdns --max 50000 \
  "${flags[@]}"
wait_for "mailpit API" 20 "$dir" "$name" curl -fsS "http://127.0.0.1:$api_port/api/v1/info"
wait_for "mailpit SMTP" 20 "$dir" "$name" bash -c "exec 3<>/dev/tcp/127.0.0.1/$smtp_port"

upper=$(echo "$name" | tr '[:lower:]-' '[:upper:]_')
cat > "$dir/$name.env" <<ENV
${upper}_SMTP=127.0.0.1:$smtp_port
${upper}_API=http://127.0.0.1:$api_port
ENV
cat "$dir/$name.env"
