#!/usr/bin/env bash
# The Python the tests run independent checkers with (dkimpy verifies DKIM
# signatures, PyNaCl its Ed25519 ones): a virtual environment under
# .cache/python/, keyed by the pinned versions, made from PyPI on first use.
# .cache/python/current points at the current one; the tests run
# .cache/python/current/bin/python3.
#
# Usage: hack/test-python.sh   (prints the interpreter's path on the last line)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# Pins: a change here makes a new environment.
packages=(dkimpy==1.1.8 dnspython==2.8.0 pynacl==1.6.2)

log() { printf '[test-python] %s\n' "$*" >&2; }

base=$(command -v python3 || true)
[ -n "$base" ] || { log "python3 is required to make the test environment"; exit 1; }
key=$(printf '%s\n' "${packages[@]}" "$("$base" -c 'import sys; print(sys.version)')" | sha256sum | cut -c1-12)
env="$root/.cache/python/env-$key"
link="$root/.cache/python/current"

if [ ! -x "$env/bin/python3" ] || ! "$env/bin/python3" -c 'import dkim, nacl' 2>/dev/null; then
  log "making $env (${packages[*]}) ..."
  start=$SECONDS
  rm -rf "$env.tmp"
  if ! "$base" -m venv "$env.tmp" 2>/dev/null; then
    # A Python without ensurepip (Debian's without python3-venv): make the
    # environment without pip and bring pip in from PyPI with the base's.
    rm -rf "$env.tmp"
    "$base" -m venv --without-pip "$env.tmp"
    "$base" -m pip --version >/dev/null 2>&1 ||
      { log "$base has neither venv's pip nor pip: install python3-venv or python3-pip"; exit 1; }
    "$base" -m pip download --quiet --disable-pip-version-check --no-deps -d "$env.tmp/wheels" pip
    "$env.tmp/bin/python3" "$(ls "$env.tmp"/wheels/pip-*.whl)/pip" install --quiet --no-index \
      "$(ls "$env.tmp"/wheels/pip-*.whl)"
  fi
  "$env.tmp/bin/python3" -m pip install --quiet --disable-pip-version-check --no-input "${packages[@]}"
  "$env.tmp/bin/python3" -c 'import dkim, nacl'
  rm -rf "$env"
  mv "$env.tmp" "$env"
  log "made in $((SECONDS - start)) s"
else
  log "cached: $env"
fi
mkdir -p "$(dirname "$link")"
ln -sfn "$env" "$link"
echo "$link/bin/python3"
