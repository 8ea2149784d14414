#!/usr/bin/env bash
# Local Redis for Parley: Debian's redis-server on loopback, its own port and
# data folder, AOF on. Usage: redis.sh up|down|status
#
# ACL users (PARLEY_REDIS_ACL, default true): no anonymous access. An ACL file
# gives each service its own user (gateway, router, presence, history:
# passwords made once in $DIR/passwords/<user>, mode 0600) that may not run
# admin or dangerous commands, and a "parley-admin" user for tests and tools.
# The devstack hands each service its user, the tests log in as parley-admin
# (parley.localstate). PARLEY_REDIS_ACL=false: anonymous access, as before.
#
# `up` on a running Redis whose settings changed (PARLEY_REDIS_ACL, the port,
# PARLEY_REDIS_APPENDFSYNC, the users) restarts it with the new ones: the AOF
# keeps the data, so an existing data directory is upgraded in place.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PORT="${PARLEY_REDIS_PORT:-6380}"
# always (default): Redis fsyncs the AOF before it answers, so an acknowledged
# send survives any crash. everysec is not enough on a lone node: while a
# background fsync runs (a busy disk), Redis 7 postpones its AOF write but still
# answers, and a SIGKILL then loses acknowledged appends whose seqs are later
# handed out again (the fault suite found it: tests/chaos/README.md).
FSYNC="${PARLEY_REDIS_APPENDFSYNC:-always}"
DIR="$PARLEY_STATE_DIR/redis"
PIDFILE="$DIR/redis.pid"
ACL="${PARLEY_REDIS_ACL:-true}"
SERVICE_USERS="gateway router presence history"

password_of() {
  local file="$DIR/passwords/$1"
  if [ ! -s "$file" ]; then
    mkdir -p "$DIR/passwords"; chmod 700 "$DIR/passwords"
    (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$file")
  fi
  cat "$file"
}

# redis-cli as the admin user when ACLs are on (the password through the environment, not argv).
cli() {
  if [ -s "$DIR/passwords/parley-admin" ]; then
    REDISCLI_AUTH="$(cat "$DIR/passwords/parley-admin")" redis-cli --user parley-admin -p "$PORT" "$@"
  else
    redis-cli -p "$PORT" "$@"
  fi
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# SIGTERM is Redis' own graceful shutdown (it fsyncs the AOF), and needs no
# login whatever the running server's users are.
stop() {
  running || return 0
  kill "$(cat "$PIDFILE")" 2>/dev/null || true
  for _ in $(seq 1 100); do running || return 0; sleep 0.1; done
  die "redis (pid $(cat "$PIDFILE")) did not stop within 10 s"
}

same_file() { if [ -f "$1" ]; then cmp -s "$1" "$2"; else [ ! -f "$2" ]; fi; }

# render_config CONF ACLFILE: the server's settings; the ACL file only with ACL users.
render_config() {
  cat > "$1" <<CONF
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
  rm -f "$2"
  [ "$ACL" = true ] || return 0
  (
    umask 077
    # Off: nobody logs in as "default". Its permissions still matter: Redis 7
    # replays the AOF as the default user and re-checks them at each EXEC, so
    # without them every MULTI/EXEC and multi-write Lua script (the services'
    # atomic writes) would be silently dropped at the next start, and so would
    # those of a data folder made before ACL users (redis/redis#14541).
    echo "user default off ~* &* +@all"
    echo "user parley-admin on >$(password_of parley-admin) ~* &* +@all"
    for user in $SERVICE_USERS; do
      # Keys are shared between the services by design (the router writes the
      # gateways' inboxes, presence and the gateway share the change stream).
      echo "user $user on >$(password_of "$user") ~* &* +@all -@admin -@dangerous"
    done
  ) > "$2"
  # The final path: redis.conf is compared and moved as a whole.
  echo "aclfile $DIR/users.acl" >> "$1"
}

case "${1:-}" in
  up)
    case "$FSYNC" in always|everysec|no) ;; *) die "PARLEY_REDIS_APPENDFSYNC must be always, everysec or no (got '$FSYNC')";; esac
    case "$ACL" in true|false) ;; *) die "PARLEY_REDIS_ACL must be true or false (got '$ACL')";; esac
    command -v redis-server >/dev/null || apt_install redis-server
    command -v redis-server >/dev/null || die "redis-server not found after install"
    mkdir -p "$DIR/data"
    render_config "$DIR/redis.conf.new" "$DIR/users.acl.new"
    if running; then
      if same_file "$DIR/redis.conf.new" "$DIR/redis.conf" && same_file "$DIR/users.acl.new" "$DIR/users.acl"; then
        rm -f "$DIR/redis.conf.new" "$DIR/users.acl.new"
        echo "redis: already running (pid $(cat "$PIDFILE"), port $PORT, ACL users: $ACL)"; exit 0
      fi
      echo "redis: settings changed (ACL users: $ACL): restarting pid $(cat "$PIDFILE"); the AOF keeps the data"
      stop
    fi
    if port_in_use "$PORT"; then
      rm -f "$DIR/redis.conf.new" "$DIR/users.acl.new"
      describe_port "$PORT" >&2
      die "port $PORT (PARLEY_REDIS_PORT) is in use by another process: stop it, or choose another port with PARLEY_REDIS_PORT=..."
    fi
    mv -f "$DIR/redis.conf.new" "$DIR/redis.conf"
    if [ -f "$DIR/users.acl.new" ]; then
      mv -f "$DIR/users.acl.new" "$DIR/users.acl"
    else
      # Without ACL users the admin's password must not suggest a login (parley.localstate).
      rm -f "$DIR/users.acl" "$DIR/passwords/parley-admin"
    fi
    redis-server "$DIR/redis.conf"
    for _ in $(seq 1 50); do
      cli ping 2>/dev/null | grep -q PONG && { echo "redis: up on 127.0.0.1:$PORT (ACL users: $ACL)"; exit 0; }
      sleep 0.1
    done
    tail -n 20 "$DIR/redis.log" >&2 || true
    die "redis did not answer PING on port $PORT"
    ;;
  down)
    stop
    echo "redis: stopped"
    ;;
  status)
    if running; then echo "redis: running (pid $(cat "$PIDFILE"), port $PORT)"; else echo "redis: stopped"; exit 3; fi
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2;;
esac
