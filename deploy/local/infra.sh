#!/usr/bin/env bash
# Local infrastructure: Redis and Cassandra. Usage: infra.sh up|down|status
#
# `up` first installs what is missing for them (redis-server, Java 17, and
# Maven while the Cassandra jars are not cached), so a fresh machine needs
# nothing but apt; each script then checks its own ports.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=deploy/local/common.sh
source "$here/common.sh"

prerequisites() {
  require_cmd redis-server redis-server
  require_cmd redis-cli redis-tools
  require_java17
  # mvn only fetches the Cassandra jars once (deploy/local/cassandra.sh).
  if [ ! -f "${PARLEY_CASSANDRA_LIB_DIR:-$PARLEY_STATE_DIR/cassandra/lib}/.parley-cassandra-version" ]; then
    require_cmd mvn maven
  fi
}

case "${1:-}" in
  up) prerequisites; "$here/redis.sh" up; "$here/cassandra.sh" up ;;
  down) "$here/redis.sh" down; "$here/cassandra.sh" down ;;
  status) rc=0; "$here/redis.sh" status || rc=$?; "$here/cassandra.sh" status || rc=$?; exit "$rc" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
