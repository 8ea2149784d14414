#!/usr/bin/env bash
# The Kotlin SDK's conformance driver (clients/conformance/README.md), registered in
# clients/conformance/drivers.json. Needs a build first: clients/kotlin/build.sh (which also
# writes target/test-classpath.txt). Runs under the harness:
#   .venv/bin/python -m tests.conformance.harness -- clients/kotlin/conformance-driver.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../deploy/local/common.sh
. "$HERE/../../deploy/local/common.sh"
java17="$(find_java17)" || die "Java 17 not found: run clients/kotlin/build.sh first"
cp_file="$HERE/target/test-classpath.txt"
[ -f "$cp_file" ] && [ -d "$HERE/target/test-classes" ] || die "the Kotlin SDK is not built: run clients/kotlin/build.sh"
exec "$java17" -cp "$HERE/target/test-classes:$HERE/target/classes:$(cat "$cp_file")" chat.parley.conformance.DriverKt "$@"
