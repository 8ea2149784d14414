#!/usr/bin/env bash
# Generates the Go messages and gRPC stubs of the public API (protos/parley/v1)
# into OUT (normally bench/loadgen/pb, the load generator's stubs) with buf and
# the local plugins protoc-gen-go and protoc-gen-go-grpc (buf.gen.yaml), all
# three built into $PARLEY_STATE_DIR/bin by deploy/local/tools.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/bench/loadgen/pb}"
state="${PARLEY_STATE_DIR:-$root/.state}"
cd "$root"
"$root/deploy/local/tools.sh" buf protoc-gen-go protoc-gen-go-grpc
export PATH="$state/bin:$PATH"
# Only the public API: the load generator is a client, and only the files in
# protos/parley/v1 carry a go_package.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
buf generate --template buf.gen.yaml --path protos/parley/v1 -o "$tmp"
rm -rf "$out/parley"
mkdir -p "$out"
cp -r "$tmp/bench/loadgen/pb/parley" "$out/"
