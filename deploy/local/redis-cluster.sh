#!/usr/bin/env bash
# Local Redis Cluster for Parley: 3 masters + 3 replicas from Debian's
# redis-server on loopback, cluster mode, AOF (appendfsync everysec: acked sends
# are made durable by WAIT on a replica, not by each node's fsync; see README
# "Durability"). Usage: redis-cluster.sh up|down|status
#
# Ports: PARLEY_REDIS_CLUSTER_PORT (default 7101: 7001-7006 would take the Cassandra ring's storage port 7004) and the five above it; each
# node's cluster bus listens 10000 higher. State: $PARLEY_STATE_DIR/redis-cluster
# (one folder per node: redis.conf, nodes.conf, AOF, log, pid).
#
# ACL users (PARLEY_REDIS_ACL, default true): the same users and password files
# as deploy/local/redis.sh ($PARLEY_STATE_DIR/redis/passwords: one user per
# service and "parley-admin"), so parley.localstate logs services and tests in
# the same way, plus "parley-replica", which may only replicate: the replicas
# log in to their master with it (masteruser/masterauth).
#
# `up` is idempotent: a running, healthy cluster with the same settings is
# left alone; nodes that are down are started again (they rejoin from their
# nodes.conf, a killed master as a replica of the one that replaced it);
# changed settings restart the nodes, keeping their data. The cluster is made
# once (redis-cli --cluster create ... --cluster-replicas 1), then `up` waits
# until every node reports cluster_state:ok and every master has a replica.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BASE="${PARLEY_REDIS_CLUSTER_PORT:-7101}"
COUNT=6
PORTS=()
for i in $(seq 0 $((COUNT - 1))); do PORTS+=("$((BASE + i))"); done
DIR="$PARLEY_STATE_DIR/redis-cluster"
PASSWORDS="$PARLEY_STATE_DIR/redis/passwords"
ACL="${PARLEY_REDIS_ACL:-true}"
# How long a master may be unreachable before its replica takes over (ms).
NODE_TIMEOUT="${PARLEY_REDIS_CLUSTER_NODE_TIMEOUT_MS:-3000}"
WAIT_S="${PARLEY_REDIS_CLUSTER_WAIT_SECONDS:-60}"
SERVICE_USERS="gateway router presence history"
REPLICA_USER="parley-replica"

password_of() {
  local file="$PASSWORDS/$1"
  if [ ! -s "$file" ]; then
    mkdir -p "$PASSWORDS"; chmod 700 "$PASSWORDS"
    (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$file")
  fi
  cat "$file"
}

node_dir() { echo "$DIR/$1"; }
pidfile() { echo "$DIR/$1/redis.pid"; }

# redis-cli against one node as the admin (the password through the environment, not argv).
cli() {
  local port="$1"; shift
  if [ "$ACL" = true ]; then
    REDISCLI_AUTH="$(password_of parley-admin)" redis-cli --no-auth-warning --user parley-admin -p "$port" "$@"
  else
    redis-cli -p "$port" "$@"
  fi
}

running() { local p; p="$(pidfile "$1")"; [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; }

stop_node() {
  local port="$1" p
  running "$port" || return 0
  p="$(pidfile "$port")"
  kill "$(cat "$p")" 2>/dev/null || true
  for _ in $(seq 1 100); do running "$port" || return 0; sleep 0.1; done
  die "redis cluster node $port (pid $(cat "$p")) did not stop within 10 s"
}

same_file() { if [ -f "$1" ]; then cmp -s "$1" "$2"; else [ ! -f "$2" ]; fi; }

render_acl() {
  echo "user default off ~* &* +@all"
  echo "user parley-admin on >$(password_of parley-admin) ~* &* +@all"
  for user in $SERVICE_USERS; do
    echo "user $user on >$(password_of "$user") ~* &* +@all -@admin -@dangerous"
  done
  # What a replica needs of its master, nothing else.
  echo "user $REPLICA_USER on >$(password_of "$REPLICA_USER") +psync +replconf +ping"
}

# render_config PORT CONF ACLFILE
render_config() {
  local port="$1" nd
  nd="$(node_dir "$port")"
  cat > "$2" <<CONF
bind 127.0.0.1
protected-mode yes
port $port
daemonize yes
pidfile $nd/redis.pid
logfile $nd/redis.log
dir $nd/data
cluster-enabled yes
cluster-config-file $nd/nodes.conf
cluster-node-timeout $NODE_TIMEOUT
appendonly yes
appendfsync everysec
save ""
maxmemory-policy noeviction
CONF
  rm -f "$3"
  [ "$ACL" = true ] || return 0
  (umask 077; render_acl > "$3")
  {
    echo "aclfile $nd/users.acl"
    echo "masteruser $REPLICA_USER"
    echo "masterauth $(password_of "$REPLICA_USER")"
  } >> "$2"
  chmod 600 "$2"
}

start_node() {
  local port="$1" nd
  nd="$(node_dir "$port")"
  if port_in_use "$port"; then
    describe_port "$port" >&2
    die "port $port (PARLEY_REDIS_CLUSTER_PORT=$BASE..$((BASE + COUNT - 1))) is in use by another process: choose another base with PARLEY_REDIS_CLUSTER_PORT=..."
  fi
  redis-server "$nd/redis.conf"
  for _ in $(seq 1 50); do
    cli "$port" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.1
  done
  tail -n 20 "$nd/redis.log" >&2 || true
  die "redis cluster node $port did not answer PING"
}

# healthy: every node says cluster_state:ok, 3 masters hold slots, and each has a replica
# whose replication link is up and synced (INFO replication: state=online).
healthy() {
  local port masters=0
  for port in "${PORTS[@]}"; do
    cli "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
  for port in "${PORTS[@]}"; do
    cli "$port" info replication 2>/dev/null | grep -q '^role:master' || continue
    masters=$((masters + 1))
    cli "$port" info replication | grep -q '^slave0:.*state=online' || return 1
  done
  [ "$masters" -eq 3 ]
}

wait_healthy() {
  for _ in $(seq 1 $((WAIT_S * 5))); do
    healthy && return 0
    sleep 0.2
  done
  for port in "${PORTS[@]}"; do cli "$port" cluster info 2>/dev/null | grep cluster_state || true; done >&2
  cli "${PORTS[0]}" cluster nodes >&2 || true
  die "the redis cluster did not become healthy (cluster_state:ok, every master with a replica) within ${WAIT_S}s"
}

case "${1:-}" in
  up)
    case "$ACL" in true|false) ;; *) die "PARLEY_REDIS_ACL must be true or false (got '$ACL')";; esac
    case "$BASE" in ''|*[!0-9]*) die "PARLEY_REDIS_CLUSTER_PORT must be a port number (got '$BASE')";; esac
    [ "$((BASE + COUNT - 1 + 10000))" -le 65535 ] || die "PARLEY_REDIS_CLUSTER_PORT=$BASE: the cluster bus ports (+10000) must fit below 65536"
    require_cmd redis-server redis-server
    require_cmd redis-cli redis-tools
    started=0
    for port in "${PORTS[@]}"; do
      nd="$(node_dir "$port")"
      mkdir -p "$nd/data"
      render_config "$port" "$nd/redis.conf.new" "$nd/users.acl.new"
      if running "$port"; then
        if same_file "$nd/redis.conf.new" "$nd/redis.conf" && same_file "$nd/users.acl.new" "$nd/users.acl"; then
          rm -f "$nd/redis.conf.new" "$nd/users.acl.new"
          continue
        fi
        echo "redis-cluster: node $port settings changed (ACL users: $ACL): restarting it; the AOF keeps the data"
        stop_node "$port"
      fi
      mv -f "$nd/redis.conf.new" "$nd/redis.conf"
      if [ -f "$nd/users.acl.new" ]; then mv -f "$nd/users.acl.new" "$nd/users.acl"; else rm -f "$nd/users.acl"; fi
      start_node "$port"
      started=$((started + 1))
    done
    if [ ! -f "$DIR/created" ]; then
      # A half-made cluster (create interrupted) is made again from empty nodes.
      for port in "${PORTS[@]}"; do
        cli "$port" dbsize | grep -qx 0 || die "node $port holds data but the cluster was never created: remove $DIR and run again"
        cli "$port" cluster reset hard >/dev/null
      done
      addrs=()
      for port in "${PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
      note "creating the redis cluster on ${addrs[*]}"
      if [ "$ACL" = true ]; then
        REDISCLI_AUTH="$(password_of parley-admin)" redis-cli --no-auth-warning --user parley-admin \
          --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 \
          || { cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
      else
        redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 \
          || { cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
      fi
      touch "$DIR/created"
    fi
    wait_healthy
    if [ "$started" -eq 0 ]; then
      echo "redis-cluster: already running on 127.0.0.1:$BASE-$((BASE + COUNT - 1)) (ACL users: $ACL)"
    else
      echo "redis-cluster: up on 127.0.0.1:$BASE-$((BASE + COUNT - 1)), 3 masters + 3 replicas (ACL users: $ACL)"
    fi
    ;;
  down)
    for port in "${PORTS[@]}"; do stop_node "$port"; done
    echo "redis-cluster: stopped"
    ;;
  status)
    down=()
    for port in "${PORTS[@]}"; do running "$port" || down+=("$port"); done
    if [ ${#down[@]} -eq ${#PORTS[@]} ]; then echo "redis-cluster: stopped"; exit 3; fi
    if [ ${#down[@]} -gt 0 ]; then echo "redis-cluster: degraded: nodes ${down[*]} are down"; exit 1; fi
    if healthy; then
      echo "redis-cluster: running on 127.0.0.1:$BASE-$((BASE + COUNT - 1)) (cluster_state:ok, every master replicated)"
    else
      echo "redis-cluster: running but not healthy:"; cli "${PORTS[0]}" cluster nodes; exit 1
    fi
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2;;
esac
