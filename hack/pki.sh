#!/usr/bin/env bash
# Writes the certificates a local control plane needs into DIR: a CA, a serving
# certificate for 127.0.0.1/localhost (used by kube-apiserver and mailpit's
# STARTTLS), an admin client certificate (CN=admin, O=system:masters) and an EC
# key pair for service-account tokens. All keys are ECDSA P-256 in PKCS#8.
#
# Usage: hack/pki.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
ossl() { openssl "$@" 2>/dev/null; }
key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

key ca.key
ossl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=mailroom-local-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt

# sign <name> <subject> <extensions>
sign() {
  key "$1.key"
  ossl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 30 \
    -extfile "$1.ext" -out "$1.crt"
  rm -f "$1.csr" "$1.ext"
}
sign serving "/CN=localhost" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
sign admin "/O=system:masters/CN=admin" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
key sa.key
ossl pkey -in sa.key -pubout -out sa.pub
chmod 600 ./*.key
