#!/usr/bin/env bash
# Local Redis for Parley: Debian's redis-server on loopback, its own port and
# data folder, AOF on. Usage: redis.sh up|down|status
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PORT="${PARLEY_REDIS_PORT:-6380}"
# everysec: at most one second of acknowledged writes lost on a machine crash
# (not on a process crash). "always" trades throughput for zero loss.
FSYNC="${PARLEY_REDIS_APPENDFSYNC:-everysec}"
DIR="$PARLEY_STATE_DIR/redis"
PIDFILE="$DIR/redis.pid"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
  up)
    case "$FSYNC" in always|everysec|no) ;; *) die "PARLEY_REDIS_APPENDFSYNC must be always, everysec or no (got '$FSYNC')";; esac
    if running; then echo "redis: already running (pid $(cat "$PIDFILE"), port $PORT)"; exit 0; fi
    command -v redis-server >/dev/null || apt_install redis-server
    command -v redis-server >/dev/null || die "redis-server not found after install"
    if port_in_use "$PORT"; then
      describe_port "$PORT" >&2
      die "port $PORT (PARLEY_REDIS_PORT) is in use by another process: stop it, or choose another port with PARLEY_REDIS_PORT=..."
    fi
    mkdir -p "$DIR/data"
    cat > "$DIR/redis.conf" <<CONF
bind 127.0.0.1
protected-mode yes
port $PORT
daemonize yes
pidfile $PIDFILE
logfile $DIR/redis.log
dir $DIR/data
appendonly yes
appendfsync $FSYNC
save ""
# Streams and routing tables are our data: never evict.
maxmemory-policy noeviction
CONF
    redis-server "$DIR/redis.conf"
    for _ in $(seq 1 50); do
      redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG && { echo "redis: up on 127.0.0.1:$PORT"; exit 0; }
      sleep 0.1
    done
    tail -n 20 "$DIR/redis.log" >&2 || true
    die "redis did not answer PING on port $PORT"
    ;;
  down)
    if running; then
      redis-cli -p "$PORT" shutdown >/dev/null 2>&1 || kill "$(cat "$PIDFILE")" 2>/dev/null || true
      for _ in $(seq 1 50); do running || break; sleep 0.1; done
    fi
    echo "redis: stopped"
    ;;
  status)
    if running; then echo "redis: running (pid $(cat "$PIDFILE"), port $PORT)"; else echo "redis: stopped"; exit 3; fi
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2;;
esac
