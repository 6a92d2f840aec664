#!/usr/bin/env bash
# Builds and checks the controller's OCI image without a container engine:
# a release build, a root filesystem with only the binary, the shared
# libraries it links, CA certificates and a non-root user (no shell), pushed
# with crane to a registry served on loopback, then checked: the image exists,
# runs as non-root, and its binary prints its version from the image's own
# filesystem (chroot).
#
# Usage: hack/build-image.sh [TAG]   (default: the crate version)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=image
. "$ROOT/hack/lib.sh"
cd "$ROOT"
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
tag=${1:-v$version}
bin=$(tools_bin crane)

log "release build"
cargo build --release --locked --bin mailroom
work=$(mktemp -d)
trap 'stop_all "$work"; rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
cp target/release/mailroom "$rootfs/usr/local/bin/mailroom"
# The shared libraries the binary links (glibc, libgcc), as distroless/cc has.
for lib in $(ldd target/release/mailroom | grep -o '/[^ ]*'); do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/" 2>/dev/null || log "no CA bundle on this machine"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$work/layer.tar" .

port=$(free_port)
start "$work" registry "$bin/crane" registry serve --address "127.0.0.1:$port"
wait_for "the local registry" 20 "$work" registry curl -fsS "http://127.0.0.1:$port/v2/"
image=127.0.0.1:$port/mailroom:$tag
"$bin/crane" append --insecure --oci-empty-base -f "$work/layer.tar" -t "$image" >/dev/null
"$bin/crane" mutate --insecure "$image" --user 65532:65532 \
  --entrypoint /usr/local/bin/mailroom --cmd run \
  --label "org.opencontainers.image.version=$version" >/dev/null
config=$("$bin/crane" config --insecure "$image")
digest=$("$bin/crane" digest --insecure "$image")
size=$(stat -c %s "$work/layer.tar")

log "checking the image"
user=$(printf '%s' "$config" | python3 -c 'import json,sys; print(json.load(sys.stdin)["config"]["User"])')
[ "$user" = "65532:65532" ] || die "the image runs as '$user', not the non-root 65532"
mkdir "$work/check"
"$bin/crane" export --insecure "$image" - | tar -C "$work/check" -xf -
[ ! -e "$work/check/bin/sh" ] || die "the image has a shell"
printed=$(chroot --userspec=65532:65532 "$work/check" /usr/local/bin/mailroom --version)
[ "$printed" = "mailroom $version" ] || die "the binary printed '$printed', expected 'mailroom $version'"
echo "image ok: $tag digest=$digest layer=$((size / 1024 / 1024)) MiB user=$user version='$printed'"
