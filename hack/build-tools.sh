#!/usr/bin/env bash
# Builds the local control plane and test servers from the pinned Go modules in
# tools/: kube-apiserver and kubectl (tools/kube), etcd (tools/etcd), mailpit
# (tools/mailpit), helm (tools/helm), crane (tools/crane), promtool (tools/promtool, for the
# alert rules' tests) and kstatus (tools/kstatus: Flux's health library over objects on stdin).
# Each output lands in .cache/tools/<tool>-<version>-<hash>/,
# keyed by the pinned version and a hash of the module files, so a binary is
# rebuilt only when its pin changes. Prints the bin directory on the last line.
#
# Usage: hack/build-tools.sh [kube|etcd|mailpit|helm|crane|promtool|kstatus ...]   (default: all)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/tools"
bindir="$cache/bin"
mkdir -p "$bindir"

log() { printf '[build-tools] %s\n' "$*" >&2; }

module_key() { # <tool dir> -> short hash of go.mod + go.sum + its own Go files + go version
  local sources
  sources=$(find "$1" -maxdepth 1 -name '*.go' | sort)
  # shellcheck disable=SC2086 # one path per word
  cat "$1/go.mod" "$1/go.sum" $sources <(go env GOVERSION) | sha256sum | cut -c1-12
}

required_version() { # <tool dir> <module path> -> pinned version
  awk -v m="$2" '$1 == m || $1 == "require" && $2 == m { print ($1 == m ? $2 : $3); exit }' "$1/go.mod"
}

# build <tool> <module> <output name> <package> [ldflags]
build() {
  local tool=$1 module=$2 name=$3 pkg=$4 ldflags=${5:-}
  local dir="$root/tools/$tool" version key out
  version=$(required_version "$dir" "$module")
  key=$(module_key "$dir")
  out="$cache/$tool-$version-$key"
  if [ -x "$out/$name" ]; then
    ln -sf "$out/$name" "$bindir/$name"
    log "$name $version: cached"
    return
  fi
  log "$name $version: building (a cold build takes minutes) ..."
  local start=$SECONDS
  mkdir -p "$out.tmp"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -pgo=off -ldflags "-s -w $ldflags" -o "$out.tmp/$name" "$pkg")
  mkdir -p "$out"
  mv "$out.tmp/$name" "$out/$name"
  rmdir "$out.tmp" 2>/dev/null || true
  ln -sf "$out/$name" "$bindir/$name"
  log "$name $version: built in $((SECONDS - start)) s"
}

command -v go >/dev/null || { log "Go is required (https://go.dev/dl/); none found on PATH"; exit 1; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(etcd mailpit kube helm crane kstatus promtool)

for t in "${targets[@]}"; do
  case $t in
    kube)
      v=$(required_version "$root/tools/kube" k8s.io/kubernetes)
      minor=$(echo "$v" | cut -d. -f2)
      vflags="-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
      build kube k8s.io/kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$vflags"
      build kube k8s.io/kubernetes kubectl k8s.io/kubernetes/cmd/kubectl "$vflags"
      ;;
    etcd) build etcd go.etcd.io/etcd/server/v3 etcd go.etcd.io/etcd/server/v3 ;;
    mailpit)
      v=$(required_version "$root/tools/mailpit" github.com/axllent/mailpit)
      build mailpit github.com/axllent/mailpit mailpit github.com/axllent/mailpit "-X github.com/axllent/mailpit/config.Version=$v"
      ;;
    helm)
      v=$(required_version "$root/tools/helm" helm.sh/helm/v3)
      build helm helm.sh/helm/v3 helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$v"
      ;;
    crane) build crane github.com/google/go-containerregistry crane github.com/google/go-containerregistry/cmd/crane ;;
    kstatus) build kstatus sigs.k8s.io/cli-utils kstatus . ;;
    promtool)
      v=$(required_version "$root/tools/promtool" github.com/prometheus/prometheus)
      build promtool github.com/prometheus/prometheus promtool github.com/prometheus/prometheus/cmd/promtool "-X github.com/prometheus/common/version.Version=$v"
      ;;
    *) log "unknown tool: $t (expected kube, etcd, mailpit, helm, crane, promtool or kstatus)"; exit 2 ;;
  esac
done
echo "$bindir"
