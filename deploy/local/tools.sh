#!/usr/bin/env bash
# Developer tools that tests use the way users do: grpcurl, buf, helm (and
# buf's Go plugins protoc-gen-go, protoc-gen-go-grpc), built
# from the Go module proxy into $PARLEY_STATE_DIR/bin (pinned versions), and
# Debian's Chromium for the web page tests and Debian's Prometheus (with
# promtool) for the metrics tests (apt).
# Usage: tools.sh [NAME...]   (default: all)
#
# Built binaries are also kept in a per-user cache ($PARLEY_TOOLS_CACHE,
# default ~/.cache/parley/tools), so a fresh clone on the same machine (CI)
# copies them instead of compiling again.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BIN="$PARLEY_STATE_DIR/bin"
CACHE="${PARLEY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley/tools}"
# Oldest Go that can fetch a newer toolchain itself (GOTOOLCHAIN=auto) when a
# tool's go.mod asks for one; the toolchain comes from the Go module proxy.
MIN_GO_MINOR=21
declare -A MODULES=(
  [grpcurl]="github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
  [buf]="github.com/bufbuild/buf/cmd/buf@v1.75.0"
  [helm]="helm.sh/helm/v3/cmd/helm@v3.22.0"
  # buf's local plugins for the Go stubs of bench/loadgen (buf.gen.yaml; remote plugins are not reachable).
  [protoc-gen-go]="google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"
  [protoc-gen-go-grpc]="google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
)
# Tools from Debian's packages: name -> "binary package...".
declare -A APT_TOOLS=(
  [chromium]="/usr/bin/chromium chromium fonts-dejavu-core"
  # The server binary and promtool; the tests start their own server on a free port.
  [prometheus]="/usr/bin/promtool prometheus"
  # Node.js (>= 18) and npm for the TypeScript SDK and the web chat (clients/typescript).
  [node]="/usr/bin/npm nodejs npm"
  # The load balancer in front of several gateways (tools/localstack/nginx.py), run as the
  # current user with its own prefix; the package's system service is not used.
  [nginx]="/usr/sbin/nginx nginx"
)

check_go() {
  command -v go >/dev/null || die "Go is not installed; it is needed to build $* from the Go module proxy: install Go >= 1.$MIN_GO_MINOR (Debian bookworm's golang-go 1.19 is too old)"
  local v minor
  v="$(go env GOVERSION 2>/dev/null || true)"   # go1.26.8
  minor="$(echo "$v" | sed -nE 's/^go1\.([0-9]+).*/\1/p')"
  if [ -z "$minor" ] || [ "$minor" -lt "$MIN_GO_MINOR" ]; then
    die "Go ${v:-of unknown version} is too old to build $*: install Go >= 1.$MIN_GO_MINOR"
  fi
}

# cache_put NAME MODULE: keeps a copy of a built tool for other clones.
cache_put() {
  local dir="$CACHE/${2//[\/@]/_}"
  { mkdir -p "$dir" && cp -f "$BIN/$1" "$dir/$1.tmp" && mv -f "$dir/$1.tmp" "$dir/$1"; } 2>/dev/null \
    || note "could not cache $1 in $dir (continuing)"
}

mkdir -p "$BIN"
requested=("$@")
[ ${#requested[@]} -gt 0 ] || requested=(grpcurl buf helm protoc-gen-go protoc-gen-go-grpc chromium prometheus node nginx)
names=()
for name in "${requested[@]}"; do
  if [ -n "${APT_TOOLS[$name]:-}" ]; then
    read -r binary packages <<<"${APT_TOOLS[$name]}"
    # shellcheck disable=SC2086  # a list of package names
    [ -x "$binary" ] || apt_install $packages
    [ -x "$binary" ] || die "$binary not found after installing $packages"
    continue
  fi
  [ -n "${MODULES[$name]:-}" ] || die "unknown tool $name (known: ${!MODULES[*]} ${!APT_TOOLS[*]})"
  names+=("$name")
done
[ ${#names[@]} -gt 0 ] || exit 0

# One builder at a time (make test and make lint may both ask).
if command -v flock >/dev/null; then
  exec 8>"$BIN/.lock"
  flock -w 1800 8 || die "timed out waiting for another tools.sh (lock $BIN/.lock)"
fi

todo=()
for name in "${names[@]}"; do
  mod="${MODULES[$name]}"
  stamp="$BIN/.$name.version"
  cached="$CACHE/${mod//[\/@]/_}/$name"
  if [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then
    [ -x "$cached" ] || cache_put "$name" "$mod"
    continue
  fi
  if [ -x "$cached" ]; then
    cp -f "$cached" "$BIN/$name.tmp" && mv -f "$BIN/$name.tmp" "$BIN/$name"
    echo "$mod" > "$stamp"
    continue
  fi
  todo+=("$name")
done
[ ${#todo[@]} -eq 0 ] && exit 0

check_go "${todo[@]}"
for name in "${todo[@]}"; do
  mod="${MODULES[$name]}"
  note "building $name ($mod) with $(go env GOVERSION)"
  GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOBIN="$BIN" GOFLAGS=-mod=mod go install "$mod" \
    || die "go install $mod failed (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
  "$BIN/$name" --version >/dev/null 2>&1 || "$BIN/$name" version >/dev/null 2>&1 \
    || die "$BIN/$name was built but does not run"
  echo "$mod" > "$BIN/.$name.version"
  cache_put "$name" "$mod"
done
