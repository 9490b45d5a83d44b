#!/usr/bin/env bash
# Installs what building and testing Grove needs beyond a Rust toolchain, when it is
# missing: protoc (the etcd client's build compiles etcd's protobuf definitions) and,
# for the tests, a real etcd. Both come from Debian's packages.
#   scripts/deps.sh build   # protoc only
#   scripts/deps.sh test    # protoc and etcd
set -euo pipefail
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ "${1:-test}" = test ] && ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
  need+=(etcd-server)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "Installing ${need[*]} from Debian's packages ..." >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package starts an etcd service on the default ports; tests run their own.
if [ -d /run/systemd/system ] && [[ " ${need[*]} " == *" etcd-server "* ]]; then
  $sudo systemctl disable --now etcd >/dev/null 2>&1 || true
fi
