#!/usr/bin/env bash
# The code generators buf.gen.yaml runs besides the venv's Python ones:
#   protoc                 (Maven Central com.google.protobuf:protoc, for buf's protoc_builtin java/kotlin)
#   protoc-gen-grpc-java   (Maven Central io.grpc:protoc-gen-grpc-java)
#   protoc-gen-es          (npm @bufbuild/protoc-gen-es, TypeScript)
# into $PARLEY_STATE_DIR/bin, pinned, checksums from Maven Central verified.
# BSR remote plugins are not used: a build must not need buf.build.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BIN="$PARLEY_STATE_DIR/bin"
MAVEN="${PARLEY_MAVEN_REPO:-https://repo1.maven.org/maven2}"
PROTOC_VERSION=4.33.5          # = protobuf-java of clients/kotlin
GRPC_JAVA_VERSION=1.80.0       # the newest with a linux-x86_64 binary on Maven Central here
PROTOC_GEN_ES_VERSION=2.17.0   # = @bufbuild/protobuf of clients/typescript
mkdir -p "$BIN"

# maven_exe NAME GROUP_PATH ARTIFACT VERSION
maven_exe() {
  local name=$1 group=$2 artifact=$3 version=$4 stamp="$BIN/.$1.version"
  [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ] && return 0
  local url="$MAVEN/$group/$artifact/$version/$artifact-$version-linux-x86_64.exe"
  note "downloading $artifact $version from Maven Central"
  curl -fsSL --retry 3 -o "$BIN/$name.tmp" "$url" || die "could not download $url"
  local want have
  want="$(curl -fsSL --retry 3 "$url.sha1" | cut -c1-40)" || die "could not download $url.sha1"
  have="$(sha1sum "$BIN/$name.tmp" | cut -c1-40)"
  [ "$want" = "$have" ] || die "$artifact $version: sha1 $have, Maven Central says $want"
  chmod +x "$BIN/$name.tmp" && mv -f "$BIN/$name.tmp" "$BIN/$name" && echo "$version" >"$stamp"
}

[ "$(uname -m)" = x86_64 ] || die "codegen-tools.sh knows the linux-x86_64 binaries only"
maven_exe protoc com/google/protobuf protoc "$PROTOC_VERSION"
maven_exe protoc-gen-grpc-java io/grpc protoc-gen-grpc-java "$GRPC_JAVA_VERSION"

stamp="$BIN/.protoc-gen-es.version"
if ! [ -x "$BIN/protoc-gen-es" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$PROTOC_GEN_ES_VERSION" ]; then
  command -v npm >/dev/null || die "npm is needed for protoc-gen-es (apt-get install npm)"
  note "installing @bufbuild/protoc-gen-es $PROTOC_GEN_ES_VERSION from npm"
  npm install --silent --no-audit --no-fund --prefix "$PARLEY_STATE_DIR/npm" \
    "@bufbuild/protoc-gen-es@$PROTOC_GEN_ES_VERSION" >/dev/null
  ln -sf "$PARLEY_STATE_DIR/npm/node_modules/.bin/protoc-gen-es" "$BIN/protoc-gen-es"
  echo "$PROTOC_GEN_ES_VERSION" >"$stamp"
fi
