#!/usr/bin/env bash
# make demo: a local control plane and mailpit, the CRDs, the operator, the
# messages in examples/demo sent, and their status shown; then a signed
# delivery webhook, as Resend posts it, turns the API message Delivered, a
# message deleted and applied again is not sent twice (AlreadySent), and a
# bounce read from the SMTP provider's mailbox (mailpit over POP3) turns a
# message Bounced and the next one to that address Suppressed. Exits 0 when
# every valid message is Sent (and the invalid one Failed, with its reason),
# the webhook and the bounce are recorded.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building the operator and the local API fakes"
cargo build -q --workspace
say "starting the local control plane and mailpit"
hack/dev-up.sh >/dev/null
dir=$ROOT/.cache/dev/env
. "$dir/env"
export KUBECONFIG
k() { "$ROOT/.cache/tools/bin/kubectl" "$@"; }
ns=mailroom-demo

say "installing the CRDs"
k apply --server-side -f crds/
k wait --for=condition=Established -f crds/ --timeout=60s >/dev/null

say "starting the operator (log: $dir/logs/mailroom.log)"
if [ -f "$dir/pids/mailroom.pid" ] && kill -0 "$(cat "$dir/pids/mailroom.pid")" 2>/dev/null; then
  echo "already running"
else
  mkdir -p "$dir/logs" "$dir/pids"
  admin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo "$admin_port" > "$dir/admin-port"
  webhook_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo "$webhook_port" > "$dir/webhook-port"
  setsid target/debug/mailroom run --log-level info --allowed-endpoint-hosts 127.0.0.1 --admin-addr "127.0.0.1:$admin_port" \
    --webhook-addr "127.0.0.1:$webhook_port" \
    >"$dir/logs/mailroom.log" 2>&1 < /dev/null &
  echo $! > "$dir/pids/mailroom.pid"
fi
admin_port=$(cat "$dir/admin-port" 2>/dev/null || echo "(see $dir/logs/mailroom.log)")
webhook_port=$(cat "$dir/webhook-port" 2>/dev/null || echo 8081)

say "starting the local fake of the providers' HTTP APIs (log: $dir/logs/fakes.log)"
if ! { [ -f "$dir/pids/fakes.pid" ] && kill -0 "$(cat "$dir/pids/fakes.pid")" 2>/dev/null; }; then
  setsid target/debug/mailroom-fakes 127.0.0.1:0 demo-key >"$dir/logs/fakes.log" 2>&1 < /dev/null &
  echo $! > "$dir/pids/fakes.pid"
fi
for _ in $(seq 50); do [ -s "$dir/logs/fakes.log" ] && break; sleep 0.1; done
FAKE_URL=$(head -n 1 "$dir/logs/fakes.log")
echo "fake APIs at $FAKE_URL (Mailtrap, Resend, Postmark, Mailgun, SendGrid paths; nothing leaves this machine)"

say "applying examples/demo in namespace $ns"
k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "$ns" create secret generic mailpit-smtp --from-literal=username="$MAILPIT_SMTP_USERNAME" \
  --from-file=password="$MAILPIT_SMTP_PASSWORD_FILE" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "$ns" create configmap local-ca --from-file=ca.crt="$MAILROOM_CA" --dry-run=client -o yaml | k apply -f - >/dev/null
MAILPIT_HOST=${MAILPIT_SMTP%:*} MAILPIT_PORT=${MAILPIT_SMTP##*:} \
  envsubst '${MAILPIT_HOST} ${MAILPIT_PORT}' < examples/demo/provider.yaml | k -n "$ns" apply -f -
k -n "$ns" apply -f examples/demo/messages.yaml
k -n "$ns" create secret generic resend-local-fake-key --from-literal=apiKey=demo-key \
  --dry-run=client -o yaml | k apply -f - >/dev/null
# The demo's webhook signing secret (Resend's whsec_ form: base64 after the prefix).
WEBHOOK_SECRET="whsec_$(printf 'mailroom-demo-signing-secret' | base64)"
k -n "$ns" create secret generic resend-local-fake-webhook --from-literal=signingSecret="$WEBHOOK_SECRET" \
  --dry-run=client -o yaml | k apply -f - >/dev/null
FAKE_URL=$FAKE_URL envsubst '${FAKE_URL}' < examples/demo/api.yaml | k -n "$ns" apply -f -

say "a message the apiserver refuses at apply time (examples/demo/rejected.yaml)"
if k -n "$ns" apply -f examples/demo/rejected.yaml 2>&1; then
  echo "error: the invalid message was accepted" >&2
  exit 1
fi

say "waiting for the messages"
for m in welcome newsletter team-update via-resend-fake; do
  # Sent=True holds for Sent and for the delivery phases after it (a re-run).
  if ! k -n "$ns" wait --for=condition=Sent "emailmessage/$m" --timeout=60s >/dev/null; then
    k -n "$ns" get emailmessage "$m" -o yaml >&2
    tail -n 30 "$dir/logs/mailroom.log" >&2
    echo "error: $m was not sent" >&2
    exit 1
  fi
done
k -n "$ns" wait --for=jsonpath='{.status.phase}'=Failed emailmessage/bad-address --timeout=60s >/dev/null

say "kubectl get emailproviders,emailmessages -n $ns"
k -n "$ns" get emailproviders,emailmessages -o wide

say "why bad-address failed"
k -n "$ns" get emailmessage bad-address \
  -o jsonpath='{.status.lastError.reason}: {.status.lastError.message}{"\n"}'

say "what welcome's status says"
k -n "$ns" get emailmessage welcome -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
k -n "$ns" get emailmessage welcome -o jsonpath='messageId={.status.messageId} providerMessageId={.status.providerMessageId}{"\n"}'

say "welcome deleted and applied again, as a GitOps tool would: it is not sent twice"
k -n "$ns" delete emailmessage welcome --wait=true >/dev/null
k -n "$ns" apply -f examples/demo/messages.yaml >/dev/null
k -n "$ns" wait --for=jsonpath='{.status.conditions[?(@.type=="Sent")].reason}'=AlreadySent \
  emailmessage/welcome --timeout=60s >/dev/null
k -n "$ns" get emailmessage welcome -o jsonpath='{range .status.conditions[?(@.type=="Sent")]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
k -n "$ns" get emailledgers

say "what the local Resend fake received for via-resend-fake"
curl -fsS "$FAKE_URL/_fake/requests" | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print(r["service"], r["method"], r["path"], "->", r["status"], "id", r["id"])
    print("  ", json.dumps(r["body"]))'
k -n "$ns" get emailmessage via-resend-fake -o jsonpath='providerMessageId={.status.providerMessageId}{"\n"}'

say "Resend reports via-resend-fake delivered: a signed webhook to the operator"
email_id=$(k -n "$ns" get emailmessage via-resend-fake -o jsonpath='{.status.providerMessageId}')
WEBHOOK_SECRET=$WEBHOOK_SECRET python3 - "http://127.0.0.1:$webhook_port/webhooks/$ns/resend-local-fake" "$email_id" "$FAKE_URL" <<'PY'
# What Resend (through Svix) posts: the event, with the tags the email was
# sent with (mailroom's origin among them: they name the message), signed
# with HMAC-SHA256 over "svix-id.svix-timestamp.body" with the webhook's secret.
import base64, hashlib, hmac, json, os, sys, time, urllib.error, urllib.request, uuid
url, email_id, fake_url = sys.argv[1], sys.argv[2], sys.argv[3]
with urllib.request.urlopen(fake_url + "/_fake/requests") as res:
    sent = [r for r in json.load(res) if r.get("id") == email_id]
tags = {t["name"]: t["value"] for t in sent[-1]["body"].get("tags", [])} if sent else {}
now = int(time.time())
body = json.dumps({"type": "email.delivered", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now)),
                   "data": {"email_id": email_id, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now)),
                            "from": "mailroom demo <demo@mailroom.dev>", "to": ["dana@example.org"],
                            "subject": "Sent through an HTTP API (Resend, local fake)", "tags": tags}}).encode()
msg_id = "msg_" + uuid.uuid4().hex
key = base64.b64decode(os.environ["WEBHOOK_SECRET"].removeprefix("whsec_"))
signature = base64.b64encode(hmac.new(key, f"{msg_id}.{now}.".encode() + body, hashlib.sha256).digest()).decode()
headers = {"content-type": "application/json", "svix-id": msg_id, "svix-timestamp": str(now), "svix-signature": f"v1,{signature}"}
for _ in range(50):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers)) as res:
            print("POST", url, "->", res.status, res.read().decode())
            break
    except urllib.error.HTTPError as e:
        if e.code != 503:
            sys.exit(f"error: the webhook was answered {e.code}: {e.read().decode()}")
    except urllib.error.URLError:
        pass
    time.sleep(0.2)
else:
    sys.exit("error: the webhook receiver did not answer")
PY
k -n "$ns" wait --for=jsonpath='{.status.phase}'=Delivered emailmessage/via-resend-fake --timeout=30s >/dev/null
k -n "$ns" get emailmessage via-resend-fake -o jsonpath='phase={.status.phase}{"\n"}{range .status.conditions[?(@.type=="Delivered")]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}{range .status.deliveryEvents[*]}event: {.type} {.recipient} at {.time}{"\n"}{end}'

say "an SMTP bounce: the recipient's server returns a DSN for bounce-me to its envelope sender"
k -n "$ns" create secret generic bounce-mailbox --from-literal=username="$MAILPIT_POP3_USERNAME" \
  --from-file=password="$MAILPIT_POP3_PASSWORD_FILE" --dry-run=client -o yaml | k apply -f - >/dev/null
MAILPIT_HOST=${MAILPIT_SMTP%:*} MAILPIT_PORT=${MAILPIT_SMTP##*:} \
  MAILPIT_POP3_HOST=${MAILPIT_POP3%:*} MAILPIT_POP3_PORT=${MAILPIT_POP3##*:} \
  envsubst '${MAILPIT_HOST} ${MAILPIT_PORT} ${MAILPIT_POP3_HOST} ${MAILPIT_POP3_PORT}' \
  < examples/demo/bounces.yaml | k -n "$ns" apply -f -
k -n "$ns" wait --for=condition=Sent emailmessage/bounce-me --timeout=60s >/dev/null
if [ "$(k -n "$ns" get emailmessage bounce-me -o jsonpath='{.status.phase}')" != Bounced ]; then
  # A DSN in Postfix's shape (tests/fixtures/bounces/postfix.eml), addressed
  # to the envelope sender mailpit recorded, dropped into the mailbox.
  python3 - "$MAILPIT_API" "$MAILPIT_SMTP" "$MAILROOM_CA" "$MAILPIT_SMTP_USERNAME" \
    "$MAILPIT_SMTP_PASSWORD_FILE" tests/fixtures/bounces/postfix.eml <<'PY'
import email.utils, json, re, smtplib, ssl, sys, urllib.parse, urllib.request
api, smtp, ca, user, password_file, fixture = sys.argv[1:]
query = urllib.parse.quote('subject:"An address that does not exist"')
with urllib.request.urlopen(f"{api}/api/v1/search?query={query}") as res:
    found = json.load(res)["messages"]
with urllib.request.urlopen(f"{api}/api/v1/message/{found[0]['ID']}") as res:
    sent = json.load(res)
envelope, message_id = sent["ReturnPath"], "<" + sent["MessageID"] + ">"
print("bounce-me went out with envelope sender", envelope)
dsn = (open(fixture).read().replace("{{ENVELOPE}}", envelope).replace("{{RECIPIENT}}", "nobody@example.org")
       .replace("{{MESSAGE_ID}}", message_id))
now = email.utils.formatdate(usegmt=True)
dsn = re.sub(r"^(Date|Arrival-Date): .*$", lambda m: f"{m.group(1)}: {now}", dsn, flags=re.M).replace("\n", "\r\n")
host, port = smtp.rsplit(":", 1)
with smtplib.SMTP(host, int(port)) as client:
    client.starttls(context=ssl.create_default_context(cafile=ca))
    client.login(user, open(password_file).read().strip())
    client.sendmail("", [envelope], dsn.encode())
print("a DSN (550 5.1.1 User unknown) delivered to", envelope)
PY
fi
k -n "$ns" wait --for=jsonpath='{.status.phase}'=Bounced emailmessage/bounce-me --timeout=60s >/dev/null
k -n "$ns" get emailmessage bounce-me -o jsonpath='phase={.status.phase}{"\n"}{range .status.conditions[?(@.type=="Delivered")]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
k -n "$ns" wait --for=condition=BouncesReady emailprovider/mailpit-bounces --timeout=60s >/dev/null
k -n "$ns" get emailprovider mailpit-bounces -o jsonpath='{range .status.conditions[?(@.type=="BouncesReady")]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
k -n "$ns" get emailsuppressions

say "the next message to that address is refused (examples/demo/after-bounce.yaml)"
k -n "$ns" apply -f examples/demo/after-bounce.yaml
k -n "$ns" wait --for=jsonpath='{.status.conditions[?(@.type=="Sent")].reason}'=Suppressed \
  emailmessage/after-bounce --timeout=60s >/dev/null
k -n "$ns" get emailmessage after-bounce -o jsonpath='phase={.status.phase} {.status.lastError.reason}: {.status.lastError.message}{"\n"}'

cat <<MSG

The mail is in mailpit's web UI: $MAILPIT_API
The operator's metrics: http://127.0.0.1:$admin_port/metrics (readiness: /readyz)
Its webhook receiver: http://127.0.0.1:$webhook_port/webhooks/$ns/<provider>
Everything keeps running. Try: KUBECONFIG=$KUBECONFIG .cache/tools/bin/kubectl -n $ns describe emailmessage welcome
Stop it all with: make dev-down
MSG
