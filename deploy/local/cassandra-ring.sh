#!/usr/bin/env bash
# A local Cassandra 5.0 ring of three nodes for the cluster topology and its tests.
#
#   deploy/local/cassandra-ring.sh up|down|status
#
# Each node is deploy/local/cassandra.sh (the same jars from Maven Central, Java 17,
# commit-log mode and authentication) with its own folder, loopback address and token:
#
#   node1 127.0.0.1  token -9223372036854775808   (the seed)
#   node2 127.0.0.2  token -3074457345618258603
#   node3 127.0.0.3  token  3074457345618258602
#
# all on the same CQL and storage ports (9044 and 7004 by default, so the ring runs
# beside the single node of `make infra-up` on 127.0.0.1:9042/7000), in one DC (dc1,
# GossipingPropertyFileSnitch). JMX stays off, as on the single node: no JMX ports.
#
# Start-up is one node after another, fast on a test box:
# - node1 is the seed and never bootstraps; the later nodes bootstrap on their first
#   start only (they stream system_auth, replicated to every node once node1 is up, so a
#   login works with any node down), with ring_delay cut from 30 s to 3 s: on a fresh
#   ring of three loopback nodes gossip settles in well under a second;
# - tokens are fixed and evenly spaced (num_tokens 1), so nothing is computed at join;
# - skip_wait_for_gossip_to_settle=0 (cassandra.sh): a node serves CQL as soon as it joined.
# A later `up` restarts only the nodes that are not running (say one a test SIGKILLed).
#
# Environment:
#   PARLEY_STATE_DIR                 state root (default <repo>/.state); the ring lives in
#                                    <state>/cassandra-ring/node{1,2,3}
#   PARLEY_RING_CASSANDRA_PORT       native CQL port of every node (default 9044)
#   PARLEY_RING_CASSANDRA_STORAGE_PORT  inter-node port of every node (default 7004)
#   PARLEY_RING_CASSANDRA_ADDRESSES  the nodes' addresses (default "127.0.0.1 127.0.0.2 127.0.0.3")
#   PARLEY_RING_CASSANDRA_DC         the DC name (default dc1)
#   PARLEY_RING_CASSANDRA_HEAP       heap per node (default 512M: three nodes in ~3 GB resident)
#   PARLEY_CASSANDRA_AUTH            true (default): PasswordAuthenticator with the roles and
#                                    passwords of the single node (<state>/cassandra/passwords),
#                                    so every login that works there works on the ring
#   PARLEY_CASSANDRA_COMMITLOG_SYNC, PARLEY_CASSANDRA_VERSION, ...: as for cassandra.sh
#
# cqlsh: .venv/bin/cqlsh --cqlshrc .state/cassandra-ring/cqlshrc
# Exit codes: 0 ok; 1 error; 2 usage; 3 `status` found a node stopped.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STATE_DIR=${PARLEY_STATE_DIR:-$REPO/.state}
# Its real path, as cassandra.sh: the same rendered settings from any checkout sharing it.
mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
RING_DIR=$STATE_DIR/cassandra-ring
PORT=${PARLEY_RING_CASSANDRA_PORT:-9044}
STORAGE_PORT=${PARLEY_RING_CASSANDRA_STORAGE_PORT:-7004}
read -r -a ADDRESSES <<<"${PARLEY_RING_CASSANDRA_ADDRESSES:-127.0.0.1 127.0.0.2 127.0.0.3}"
DC=${PARLEY_RING_CASSANDRA_DC:-dc1}
HEAP=${PARLEY_RING_CASSANDRA_HEAP:-512M}
AUTH=${PARLEY_CASSANDRA_AUTH:-true}
# The single node's password files: one set of roles for every local Cassandra.
PASSWORD_DIR=$STATE_DIR/cassandra/passwords

log() { printf 'cassandra-ring: %s\n' "$*"; }
die() { printf 'cassandra-ring: error: %s\n' "$*" >&2; exit 1; }

((${#ADDRESSES[@]} >= 1)) || die "PARLEY_RING_CASSANDRA_ADDRESSES names no node"
[[ $PORT != 9042 && $STORAGE_PORT != 7000 ]] ||
    die "ports 9042/7000 belong to the single node of make infra-up; pick others"

# token N of COUNT, evenly spaced over Murmur3's range [-2^63, 2^63).
token() {
    python3 -c 'import sys; i, n = map(int, sys.argv[1:]); print(-(2**63) + i * (2**64 // n))' "$1" "$2"
}

# node I ACTION: cassandra.sh for node I (0-based), with that node's settings.
node() {
    local i=$1 action=$2 bootstrap=true
    # The seed never bootstraps; the others do on their first start only (Cassandra
    # records it in system.local and ignores the setting afterwards).
    ((i > 0)) || bootstrap=false
    PARLEY_CASSANDRA_DIR=$RING_DIR/node$((i + 1)) \
        PARLEY_CASSANDRA_ADDRESS=${ADDRESSES[$i]} \
        PARLEY_CASSANDRA_PORT=$PORT \
        PARLEY_CASSANDRA_STORAGE_PORT=$STORAGE_PORT \
        PARLEY_CASSANDRA_SEEDS="${ADDRESSES[0]}:$STORAGE_PORT" \
        PARLEY_CASSANDRA_CLUSTER_NAME="Parley Ring" \
        PARLEY_CASSANDRA_DC=$DC \
        PARLEY_CASSANDRA_INITIAL_TOKEN=$(token "$i" "${#ADDRESSES[@]}") \
        PARLEY_CASSANDRA_AUTO_BOOTSTRAP=$bootstrap \
        PARLEY_CASSANDRA_HINTED_HANDOFF=true \
        PARLEY_CASSANDRA_RING_DELAY_MS=3000 \
        PARLEY_CASSANDRA_HEAP=$HEAP \
        PARLEY_CASSANDRA_LIB_DIR=${PARLEY_CASSANDRA_LIB_DIR:-$STATE_DIR/cassandra/lib} \
        PARLEY_CASSANDRA_PASSWORD_DIR=$PASSWORD_DIR \
        "$HERE/cassandra.sh" "$action" 2>&1 | sed -u "s/^cassandra:/node$((i + 1)):/"
    return "${PIPESTATUS[0]}"
}

python_with_driver() {
    local py
    for py in "$REPO/.venv/bin/python" python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import cassandra.cluster' >/dev/null 2>&1; then
            printf '%s\n' "$py"
            return 0
        fi
    done
    die "no Python with cassandra-driver (make venv)"
}

# Every node has started before (it has its system tables): the ring was made.
ring_made() {
    local i
    for i in "${!ADDRESSES[@]}"; do
        [[ -d $RING_DIR/node$((i + 1))/data/data/system ]] || return 1
    done
}

cmd_up() {
    local i start=$SECONDS pids=() failed=0
    mkdir -p "$RING_DIR"
    if ring_made; then
        # A made ring starts its stopped nodes together. One after another would hang on
        # the first: with authentication, a login reads system_auth (RF 3 here) at
        # LOCAL_QUORUM (Cassandra 5's auth_read_consistency_level), so a node alone cannot
        # log in cassandra.sh's role check, which would wait in vain for the others.
        for i in "${!ADDRESSES[@]}"; do
            node "$i" up &
            pids+=("$!")
        done
        for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed=1; done
        ((failed == 0)) || die "a node did not start (see above)"
        "$(python_with_driver)" "$HERE/cassandra/ring.py" "${ADDRESSES[0]}" "$PORT" \
            "$([[ $AUTH == true ]] && echo "$PASSWORD_DIR" || echo /nonexistent)" "$DC" "${#ADDRESSES[@]}"
    else
        for i in "${!ADDRESSES[@]}"; do
            node "$i" up
            if ((i == 0)); then
                # Before any other node joins: roles replicated to every node (cassandra/ring.py).
                "$(python_with_driver)" "$HERE/cassandra/ring.py" "${ADDRESSES[0]}" "$PORT" \
                    "$([[ $AUTH == true ]] && echo "$PASSWORD_DIR" || echo /nonexistent)" "$DC" "${#ADDRESSES[@]}"
            fi
        done
    fi
    # cqlsh's settings for the ring: node1's, with node1's login file.
    cp "$RING_DIR/node1/cqlshrc" "$RING_DIR/cqlshrc"
    log "${#ADDRESSES[@]} nodes up (${ADDRESSES[*]}, CQL port $PORT, DC $DC) after $((SECONDS - start)) s"
}

cmd_down() {
    local i
    for ((i = ${#ADDRESSES[@]} - 1; i >= 0; i--)); do node "$i" down; done
}

cmd_status() {
    local i rc=0
    for i in "${!ADDRESSES[@]}"; do node "$i" status || rc=3; done
    return "$rc"
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
