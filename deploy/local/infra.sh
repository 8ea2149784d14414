#!/usr/bin/env bash
# Local infrastructure: Redis and Cassandra. Usage: infra.sh up|down|status
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
case "${1:-}" in
  up) "$here/redis.sh" up; "$here/cassandra.sh" up ;;
  down) "$here/redis.sh" down; "$here/cassandra.sh" down ;;
  status) rc=0; "$here/redis.sh" status || rc=$?; "$here/cassandra.sh" status || rc=$?; exit "$rc" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
