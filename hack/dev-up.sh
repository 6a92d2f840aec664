#!/usr/bin/env bash
# Starts a local environment: etcd, a kube-apiserver with RBAC on, and mailpit
# (STARTTLS with the local CA, SMTP AUTH with a generated password), all on free
# loopback ports. Waits until /readyz answers and the default namespace exists,
# then writes DIR/env (KUBECONFIG, MAILPIT_SMTP, MAILPIT_API, ...) and prints how
# to use and stop it. On any failure it stops what it started.
#
# Usage: hack/dev-up.sh [DIR] [--owner-pid PID] [--quiet] [--mailpit-only]
#   DIR             state directory (default .cache/dev/env); several can run at once
#   --owner-pid     stop the environment by itself when process PID exits
#   --mailpit-only  start only mailpit (for tests against an existing cluster)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=dev-up
. "$ROOT/hack/lib.sh"

dir="" owner="" quiet="" mailpit_only=""
while [ $# -gt 0 ]; do
  case $1 in
    --owner-pid) owner=$2; shift 2 ;;
    --mailpit-only) mailpit_only=1; shift ;;
    --quiet) quiet=1; shift ;;
    *) dir=$1; shift ;;
  esac
done
dir=${dir:-$ROOT/.cache/dev/env}

if [ -f "$dir/env" ] && [ -f "$dir/pids/mailpit.pid" ] && kill -0 "$(cat "$dir/pids/mailpit.pid")" 2>/dev/null; then
  if grep -q '^MAILPIT_POP3=' "$dir/env"; then
    log "already running in $dir (stop it with: hack/dev-down.sh $dir)"
    cat "$dir/env"
    exit 0
  fi
  log "an environment from an older version runs in $dir: restarting it"
  "$ROOT/hack/dev-down.sh" "$dir" >/dev/null
fi

if [ -n "$mailpit_only" ]; then bin=$(tools_bin mailpit); else bin=$(tools_bin etcd kube-apiserver kubectl mailpit); fi
rm -rf "$dir"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

started=0
cleanup() { [ $started = 1 ] || "$ROOT/hack/dev-down.sh" "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT

t0=$SECONDS
"$ROOT/hack/pki.sh" "$dir/pki"
pki=$dir/pki

if [ -z "$mailpit_only" ]; then
etcd_port=$(free_port) peer_port=$(free_port) api_port=$(free_port)
start "$dir" etcd "$bin/etcd" --name=local --data-dir="$dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="local=http://127.0.0.1:$peer_port" --unsafe-no-fsync=true --log-level=warn
wait_for "etcd /health" 30 "$dir" etcd curl -fsS "http://127.0.0.1:$etcd_port/health"

start "$dir" kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --secure-port="$api_port" --cert-dir="$pki" --tls-cert-file="$pki/serving.crt" \
  --tls-private-key-file="$pki/serving.key" --client-ca-file="$pki/ca.crt" \
  --authorization-mode=RBAC --service-account-issuer="https://127.0.0.1:$api_port" \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
  --disable-admission-plugins=ServiceAccount --endpoint-reconciler-type=none --v=1
curl_api() { curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "https://127.0.0.1:$api_port$1"; }
wait_for "kube-apiserver /readyz" 90 "$dir" kube-apiserver curl_api /readyz

b64() { base64 -w0 < "$1"; }
cat > "$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KC
chmod 600 "$dir/kubeconfig"
wait_for "the default namespace" 60 "$dir" kube-apiserver \
  "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get namespace default
fi

smtp_password=$(openssl rand -hex 16)
printf 'mailroom:%s\n' "$smtp_password" > "$dir/smtp-auth"
chmod 600 "$dir/smtp-auth"
# mailpit also serves its mail over POP3 with TLS: the demo's bounce mailbox.
pop3_password=$(openssl rand -hex 16)
printf 'bounces:%s\n' "$pop3_password" > "$dir/pop3-auth"
chmod 600 "$dir/pop3-auth"
pop3_port=$(free_port)
"$ROOT/hack/mailpit-up.sh" "$dir" mailpit --tls "$pki/serving.crt" "$pki/serving.key" \
  --require-starttls --auth-file "$dir/smtp-auth" -- --pop3 "127.0.0.1:$pop3_port" \
  --pop3-auth-file "$dir/pop3-auth" --pop3-tls-cert "$pki/serving.crt" --pop3-tls-key "$pki/serving.key" >/dev/null

{ [ -n "$mailpit_only" ] || echo "KUBECONFIG=$dir/kubeconfig"; cat <<ENV
MAILROOM_CA=$pki/ca.crt
$(cat "$dir/mailpit.env")
MAILPIT_SMTP_USERNAME=mailroom
MAILPIT_SMTP_PASSWORD_FILE=$dir/smtp-password
MAILPIT_POP3=127.0.0.1:$pop3_port
MAILPIT_POP3_USERNAME=bounces
MAILPIT_POP3_PASSWORD_FILE=$dir/pop3-password
ENV
} > "$dir/env"
printf '%s' "$smtp_password" > "$dir/smtp-password"
chmod 600 "$dir/smtp-password"
printf '%s' "$pop3_password" > "$dir/pop3-password"
chmod 600 "$dir/pop3-password"

if [ -n "$owner" ]; then
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" "$3" --purge' \
    owner-watch "$owner" "$ROOT/hack/dev-down.sh" "$dir" >/dev/null 2>&1 < /dev/null &
  echo $! > "$dir/owner-watch.pid"
fi
started=1
if [ -z "$quiet" ]; then
  . "$dir/mailpit.env"
  cat >&2 <<MSG
[dev-up] ready in $((SECONDS - t0)) s
  kubeconfig:   $dir/kubeconfig
                $bin/kubectl --kubeconfig $dir/kubeconfig get namespaces
  mailpit UI:   $MAILPIT_API
  mailpit SMTP: $MAILPIT_SMTP (STARTTLS required, CA $pki/ca.crt, user mailroom, password in $dir/smtp-password)
  mailpit POP3: 127.0.0.1:$pop3_port (TLS, user bounces, password in $dir/pop3-password)
  stop it:      make dev-down   (or hack/dev-down.sh $dir)
MSG
fi
cat "$dir/env"
