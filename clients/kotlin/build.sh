#!/usr/bin/env bash
# Runs Maven on the Kotlin SDK with Java 17, installing Maven and a Java 17 JDK from Debian's
# packages when they are missing. Dependencies, protoc and the gRPC code generators come from
# Maven Central into ~/.m2 on the first build.
#
#   clients/kotlin/build.sh                  compile and package (tests compiled, not run), unless
#                                            nothing changed since the last build (sources, pom, protos)
#   clients/kotlin/build.sh MVN-ARGS...      mvn with these arguments, e.g. `test` or `-q surefire:test`
#                                            (the stack tests need PARLEY_GATEWAY and PARLEY_CA_FILE:
#                                            tests/e2e/test_kotlin_sdk.py sets them)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../deploy/local/common.sh
. "$HERE/../../deploy/local/common.sh"

command -v mvn >/dev/null 2>&1 || apt_install maven
java17="$(find_java17)" || true
jdk="${java17:+$(dirname "$(dirname "$(readlink -f "$java17")")")}"
# Kotlin needs a JRE, but the generated Java is compiled by javac: a JDK.
if [ -z "$jdk" ] || [ ! -x "$jdk/bin/javac" ]; then
  apt_install openjdk-17-jdk-headless
  java17="$(find_java17)" || die "Java 17 not found after installing openjdk-17-jdk-headless"
  jdk="$(dirname "$(dirname "$(readlink -f "$java17")")")"
fi
export JAVA_HOME="$jdk"

cd "$HERE"
if [ $# -eq 0 ]; then
  # The package phase writes target/test-classpath.txt last: a build is fresh when nothing it
  # reads is newer (the Kotlin compiler has no cheap up-to-date check of its own under Maven).
  stamp=target/test-classpath.txt
  if [ -f "$stamp" ] && [ -z "$(find src pom.xml ../../protos/parley/v1 -newer "$stamp" -print -quit)" ]; then
    exit 0
  fi
  set -- -q -DskipTests package
fi
exec mvn -B --no-transfer-progress "$@"
