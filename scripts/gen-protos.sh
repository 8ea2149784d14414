#!/usr/bin/env bash
# Generates Python modules, gRPC stubs and .pyi type stubs for every proto
# into OUT (normally services/, so they land in the shared `parley` package).
set -euo pipefail
out="${1:?usage: gen-protos.sh OUTDIR}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PY:-$root/.venv/bin/python}"
cd "$root"
# protoc finds the mypy plugins on PATH.
bindir="$(dirname "$py")"
export PATH="$bindir:$PATH"
mapfile -t protos < <(find protos -name '*.proto' | sort)
mkdir -p "$out"
"$py" -m grpc_tools.protoc -Iprotos \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  "${protos[@]}"
