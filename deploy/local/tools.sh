#!/usr/bin/env bash
# Developer tools that tests use the way users do: grpcurl, buf, helm, built
# from the Go module proxy into $PARLEY_STATE_DIR/bin (pinned versions).
# Usage: tools.sh [NAME...]   (default: all)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BIN="$PARLEY_STATE_DIR/bin"
declare -A MODULES=(
  [grpcurl]="github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
  [buf]="github.com/bufbuild/buf/cmd/buf@v1.75.0"
  [helm]="helm.sh/helm/v3/cmd/helm@v3.22.0"
)
mkdir -p "$BIN"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(grpcurl buf helm)
for name in "${names[@]}"; do
  mod="${MODULES[$name]:-}"
  [ -n "$mod" ] || die "unknown tool $name"
  stamp="$BIN/.$name.version"
  if [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then continue; fi
  command -v go >/dev/null || die "go is needed to build $name (install golang from apt or go.dev)"
  note "building $name ($mod)"
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$mod" || die "go install $mod failed"
  echo "$mod" > "$stamp"
done
