#!/usr/bin/env bash
# Generates Python modules, gRPC stubs and .pyi type stubs for every proto:
# the public API (protos/parley/v1) into ROOT/clients/python (the parley-client
# distribution ships it), the internal one (protos/parley/internal) into
# ROOT/services (the server's). ROOT defaults to the repository.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root}"
py="${PY:-$root/.venv/bin/python}"
cd "$root"
# protoc finds the mypy plugins on PATH.
bindir="$(dirname "$py")"
export PATH="$bindir:$PATH"
generate() {  # OUTDIR PROTO_DIR
  local dir="$out/$1"
  mapfile -t protos < <(find "$2" -name '*.proto' | sort)
  mkdir -p "$dir"
  "$py" -m grpc_tools.protoc -Iprotos \
    --python_out="$dir" --grpc_python_out="$dir" \
    --mypy_out="$dir" --mypy_grpc_out="$dir" \
    "${protos[@]}"
}
generate clients/python protos/parley/v1
generate services protos/parley/internal
