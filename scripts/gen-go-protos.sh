#!/usr/bin/env bash
# Generates the Go messages and gRPC stubs of the public API (parley.v1) into
# OUT (default bench/loadgen/pb, the load generator's stubs) with buf and the
# Go plugins of buf.gen.yaml (protoc-gen-go, protoc-gen-go-grpc), all built
# into .state/bin by deploy/local/tools.sh. Only the Go plugins run, so the
# other languages' plugins need not be installed for this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/bench/loadgen/pb}"
py="${PY:-$root/.venv/bin/python}"
cd "$root"
"$root/deploy/local/tools.sh" buf protoc-gen-go protoc-gen-go-grpc
template="$("$py" - <<'PY'
import json
import yaml

with open("buf.gen.yaml") as f:
    config = yaml.safe_load(f)
config["plugins"] = [p for p in config["plugins"] if "protoc-gen-go" in str(p.get("local", ""))]
if not config["plugins"]:
    raise SystemExit("buf.gen.yaml has no protoc-gen-go plugins")
print(json.dumps(config))
PY
)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PARLEY_STATE_DIR:-$root/.state}/bin/buf" generate --template "$template" -o "$tmp"
rm -rf "$out/parley"
mkdir -p "$out"
cp -r "$tmp/bench/loadgen/pb/parley" "$out/"
