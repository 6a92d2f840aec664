#!/usr/bin/env bash
# Brings up the local environment, installs the CRDs and shows an EmailMessage
# stored and validated by the real apiserver.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
hack/dev-up.sh >/dev/null
export KUBECONFIG=$ROOT/.cache/dev/env/kubeconfig
k() { .cache/tools/bin/kubectl "$@"; }
k apply --server-side -f crds/
k wait --for=condition=Established -f crds/ --timeout=60s
k apply -f examples/
k get emailmessages -A
echo "the environment keeps running: make dev-down stops it"
