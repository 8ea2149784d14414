#!/usr/bin/env bash
# Run a real single-node Apache Cassandra 5.0.x for local development and tests.
#
#   deploy/local/cassandra.sh up|down|status|wait
#
# There is no Docker and no Apache download mirror here, but the server is
# published on Maven Central as org.apache.cassandra:cassandra-all: its runtime
# dependencies are exactly a release tarball's lib/. So `up` fetches them once
# with mvn (deploy/local/cassandra/pom.xml) and starts CassandraDaemon directly
# on Java 17 with the flags 5.0's bin/cassandra would use.
#
# Environment:
#   PARLEY_STATE_DIR               state root (default <repo>/.state)
#   PARLEY_CASSANDRA_PORT          native CQL port (default 9042)
#   PARLEY_CASSANDRA_STORAGE_PORT  inter-node port (default 7000)
#   PARLEY_CASSANDRA_HEAP          JVM heap, e.g. 1G or 768M (default 1G)
#   PARLEY_CASSANDRA_VERSION       cassandra-all version (default 5.0.8, falling
#                                  back to 5.0.6 if 5.0.8 cannot be fetched)
#   PARLEY_CASSANDRA_COMMITLOG_SYNC  batch (default), group or periodic: when an
#                                  acknowledged write is on disk (cassandra.yaml)
#   PARLEY_CASSANDRA_GROUP_WINDOW_MS group mode's fsync window (default 10)
#   PARLEY_CASSANDRA_SYNC_PERIOD_MS  periodic mode's sync period (default 10000)
#   PARLEY_CASSANDRA_LIB_DIR       where the jars are (default <state>/cassandra/lib)
#
# One node of a ring (deploy/local/cassandra-ring.sh sets these; a lone node needs none):
#   PARLEY_CASSANDRA_DIR           this node's folder (default <state>/cassandra)
#   PARLEY_CASSANDRA_ADDRESS       listen and CQL address (default 127.0.0.1; any 127.x.y.z
#                                  works: Linux routes all of 127/8 to the loopback device)
#   PARLEY_CASSANDRA_SEEDS         seed list (default this node's address:storage port)
#   PARLEY_CASSANDRA_CLUSTER_NAME  (default 'Parley Local')
#   PARLEY_CASSANDRA_DC            empty (default): SimpleSnitch (datacenter1); a name:
#                                  GossipingPropertyFileSnitch in that DC, rack rack1
#   PARLEY_CASSANDRA_INITIAL_TOKEN this node's single token (default 0)
#   PARLEY_CASSANDRA_AUTO_BOOTSTRAP  true: stream its ranges from the ring on its first
#                                  start (default false: a lone node has nobody to ask)
#   PARLEY_CASSANDRA_HINTED_HANDOFF  (default false: a lone node has nobody to hint)
#   PARLEY_CASSANDRA_RING_DELAY_MS   how long a joining node waits for gossip (Cassandra's
#                                  default is 30000; unset keeps it)
#   PARLEY_CASSANDRA_PASSWORD_DIR  the roles' password files (default <dir>/passwords)
#   PARLEY_CASSANDRA_AUTH          true (default): PasswordAuthenticator, roles parley
#                                  (services, tests) and parley_admin (tools), passwords
#                                  in <state>/cassandra/passwords (cassandra/auth.py),
#                                  the default cassandra/cassandra login disabled; a
#                                  data directory made without authentication is
#                                  upgraded in place. false: anyone may connect.
#
# `up` on a running node whose rendered settings changed (PARLEY_CASSANDRA_AUTH,
# the commit-log mode, the templates) restarts it with the new ones.
#
# State lives in $PARLEY_STATE_DIR/cassandra/{lib,conf,data,logs}; the pid is
# in $PARLEY_STATE_DIR/cassandra/cassandra.pid.
#
# Exit codes: 0 ok; 1 error; 2 usage; 3 `status` found it stopped.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TEMPLATES=$HERE/cassandra

STATE_DIR=${PARLEY_STATE_DIR:-$REPO/.state}
# Its real path: checkouts that share one state folder through a symlink (git worktrees
# linking .state) render the same cassandra.yaml, so none of them restarts the node
# for a path that differs only in spelling.
if [[ -d $STATE_DIR ]]; then STATE_DIR=$(cd "$STATE_DIR" && pwd -P); fi
NATIVE_PORT=${PARLEY_CASSANDRA_PORT:-9042}
STORAGE_PORT=${PARLEY_CASSANDRA_STORAGE_PORT:-7000}
HEAP=${PARLEY_CASSANDRA_HEAP:-1G}
# batch: acknowledged writes are in the fsynced commit log (see cassandra.yaml).
COMMITLOG_SYNC=${PARLEY_CASSANDRA_COMMITLOG_SYNC:-batch}
GROUP_WINDOW_MS=${PARLEY_CASSANDRA_GROUP_WINDOW_MS:-10}
PERIODIC_MS=${PARLEY_CASSANDRA_SYNC_PERIOD_MS:-10000}
AUTH=${PARLEY_CASSANDRA_AUTH:-true}
if [[ -n ${PARLEY_CASSANDRA_VERSION:-} ]]; then
    VERSIONS=("$PARLEY_CASSANDRA_VERSION")
else
    # 5.0.5+ is the first line whose Java 17 support is production-ready.
    VERSIONS=(5.0.8 5.0.6)
fi

CASS_DIR=${PARLEY_CASSANDRA_DIR:-$STATE_DIR/cassandra}
ADDRESS=${PARLEY_CASSANDRA_ADDRESS:-127.0.0.1}
SEEDS=${PARLEY_CASSANDRA_SEEDS:-$ADDRESS:$STORAGE_PORT}
CLUSTER_NAME=${PARLEY_CASSANDRA_CLUSTER_NAME:-Parley Local}
DC=${PARLEY_CASSANDRA_DC:-}
INITIAL_TOKEN=${PARLEY_CASSANDRA_INITIAL_TOKEN:-0}
AUTO_BOOTSTRAP=${PARLEY_CASSANDRA_AUTO_BOOTSTRAP:-false}
HINTED_HANDOFF=${PARLEY_CASSANDRA_HINTED_HANDOFF:-false}
RING_DELAY_MS=${PARLEY_CASSANDRA_RING_DELAY_MS:-}
PASSWORD_DIR=${PARLEY_CASSANDRA_PASSWORD_DIR:-$CASS_DIR/passwords}
# A second node on the same machine (the fault suite, crash tests) reuses the
# jars of the first instead of downloading them again.
LIB_DIR=${PARLEY_CASSANDRA_LIB_DIR:-$CASS_DIR/lib}
CONF_DIR=$CASS_DIR/conf
DATA_DIR=$CASS_DIR/data
LOG_DIR=$CASS_DIR/logs
PID_FILE=$CASS_DIR/cassandra.pid
# Written last by a download, so a half-finished lib/ is never taken as complete.
LIB_MARKER=$LIB_DIR/.parley-cassandra-version

READY_TIMEOUT=180
STOP_TIMEOUT=60
READY_LOG_LINE='Starting listening for CQL clients'

log() { printf 'cassandra: %s\n' "$*"; }
die() { printf 'cassandra: error: %s\n' "$*" >&2; exit 1; }

# --- process and port helpers ----------------------------------------------

# A zombie (exited, not yet reaped by whoever inherited it) counts as gone.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# Pid from the pid file if that process is still our CassandraDaemon; checking
# the command line guards against a stale pid file whose pid was reused.
running_pid() {
    local pid
    [[ -f $PID_FILE ]] || return 1
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'org.apache.cassandra.service.CassandraDaemon' || return 1
    printf '%s\n' "$pid"
}

# bash's /dev/tcp needs no extra tools (no nc/ss) and sees any listener on loopback.
port_open() {
    (exec 3<>"/dev/tcp/$ADDRESS/$1") 2>/dev/null
}

describe_listener() {
    if command -v ss >/dev/null 2>&1; then
        ss -ltnpH "sport = :$1" 2>/dev/null | head -n 3 || true
    fi
}

# The port the running node was configured with, from its rendered yaml.
configured_port() {
    local p=""
    if [[ -f $CONF_DIR/cassandra.yaml ]]; then
        p=$(awk -F': *' '$1 == "native_transport_port" {print $2; exit}' "$CONF_DIR/cassandra.yaml")
    fi
    printf '%s\n' "${p:-$NATIVE_PORT}"
}

# --- readiness ---------------------------------------------------------------

# Exit 0: the node answered a real CQL query; 1: not (yet) answering;
# 2: this interpreter has no usable cassandra-driver, so use the fallback check.
# shellcheck disable=SC2016  # Python source, not shell.
CQL_PROBE='
import sys, logging, warnings
logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")
try:
    from cassandra.cluster import Cluster
    cluster = Cluster([sys.argv[2]], port=int(sys.argv[1]),
                      connect_timeout=3, control_connection_timeout=3)
except Exception:  # ImportError, or no usable event loop (DependencyException)
    sys.exit(2)
try:
    row = cluster.connect().execute("SELECT release_version FROM system.local", timeout=5).one()
    print(row.release_version)
except Exception as exc:
    # With authentication on, a refused login is an answer: the node is up.
    sys.exit(0 if "Authentication" in repr(exc) else 1)
finally:
    cluster.shutdown()
'

PROBE_PYTHON=""
pick_probe_python() {
    local py
    # The project's venv (pyproject.toml pins cassandra-driver) if it exists.
    for py in "$STATE_DIR/venv/bin/python" "$REPO/.venv/bin/python" python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import cassandra.cluster' >/dev/null 2>&1; then
            PROBE_PYTHON=$py
            return 0
        fi
    done
    PROBE_PYTHON=""
}

# One readiness check. Without a driver, the log line plus an open port is the
# best evidence: Cassandra binds the CQL port as the very last start-up step.
is_ready() {
    local port=$1 rc=0
    port_open "$port" || return 1
    if [[ -n $PROBE_PYTHON ]]; then
        "$PROBE_PYTHON" -c "$CQL_PROBE" "$port" "$ADDRESS" >/dev/null 2>&1 || rc=$?
        case $rc in
            0) return 0 ;;
            2) PROBE_PYTHON="" ;;  # driver unusable after all: fall through
            *) return 1 ;;
        esac
    fi
    grep -qF "$READY_LOG_LINE" "$LOG_DIR/system.log" 2>/dev/null
}

show_log_tail() {
    local f
    for f in "$LOG_DIR/stdout.log" "$LOG_DIR/system.log"; do
        [[ -s $f ]] || continue
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

# Wait until the node answers CQL. If we know its pid, a dead process fails at
# once instead of after the full timeout.
wait_ready() {
    local port=$1 start=$SECONDS pid=""
    pick_probe_python
    if [[ -n $PROBE_PYTHON ]]; then
        log "waiting for CQL on $ADDRESS:$port (checking with $PROBE_PYTHON)"
    else
        log "waiting for CQL on $ADDRESS:$port (no cassandra-driver found: checking port and log)"
    fi
    while ((SECONDS - start < READY_TIMEOUT)); do
        if [[ -f $PID_FILE ]]; then
            if ! pid=$(running_pid); then
                printf 'cassandra: error: the Cassandra process (pid %s) is gone\n' "$(<"$PID_FILE")" >&2
                show_log_tail
                rm -f "$PID_FILE"
                return 1
            fi
        fi
        if is_ready "$port"; then
            log "ready on $ADDRESS:$port after $((SECONDS - start)) s${pid:+ (pid $pid)}"
            return 0
        fi
        sleep 1
    done
    printf 'cassandra: error: not answering on $ADDRESS:%s after %s s\n' "$port" "$READY_TIMEOUT" >&2
    show_log_tail
    return 1
}

# --- prerequisites -----------------------------------------------------------

JAVA=""
# Cassandra 5.0 runs on Java 11 or 17 only; we standardise on 17. JAVA_HOME
# wins, then Debian's usual location, then whatever `java` is on PATH.
find_java() {
    local candidate version
    local candidates=()
    [[ -n ${JAVA_HOME:-} ]] && candidates+=("$JAVA_HOME/bin/java")
    for candidate in /usr/lib/jvm/java-17-openjdk*/bin/java; do
        candidates+=("$candidate")
    done
    if command -v java >/dev/null 2>&1; then
        candidates+=("$(command -v java)")
    fi
    for candidate in "${candidates[@]}"; do
        [[ -x $candidate ]] || continue
        version=$("$candidate" -XshowSettings:properties -version 2>&1 |
            awk -F'= *' '/java.specification.version/ {print $2; exit}')
        if [[ $version == 17 ]]; then
            JAVA=$candidate
            return 0
        fi
    done
    die "Java 17 not found (Cassandra 5.0 needs Java 17 here; JAVA_HOME and PATH have none): install openjdk-17-jdk-headless (apt-get install -y openjdk-17-jdk-headless)"
}

check_settings() {
    local p
    for p in "$NATIVE_PORT" "$STORAGE_PORT"; do
        if ! [[ $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "invalid port '$p'"; fi
    done
    [[ $NATIVE_PORT != "$STORAGE_PORT" ]] || die "PARLEY_CASSANDRA_PORT and PARLEY_CASSANDRA_STORAGE_PORT are both $NATIVE_PORT"
    [[ $HEAP =~ ^[0-9]+[mMgG]$ ]] || die "PARLEY_CASSANDRA_HEAP must look like 1G or 768M, got '$HEAP'"
    case $COMMITLOG_SYNC in
        group | batch | periodic) ;;
        *) die "PARLEY_CASSANDRA_COMMITLOG_SYNC must be group, batch or periodic, got '$COMMITLOG_SYNC'" ;;
    esac
    [[ $GROUP_WINDOW_MS =~ ^[0-9]+$ ]] && ((GROUP_WINDOW_MS >= 1)) ||
        die "PARLEY_CASSANDRA_GROUP_WINDOW_MS must be a positive integer, got '$GROUP_WINDOW_MS'"
    [[ $PERIODIC_MS =~ ^[0-9]+$ ]] && ((PERIODIC_MS >= 1)) ||
        die "PARLEY_CASSANDRA_SYNC_PERIOD_MS must be a positive integer, got '$PERIODIC_MS'"
    [[ $AUTH == true || $AUTH == false ]] || die "PARLEY_CASSANDRA_AUTH must be true or false, got '$AUTH'"
    [[ $ADDRESS =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "PARLEY_CASSANDRA_ADDRESS must be a loopback address (127.x.y.z), got '$ADDRESS'"
    [[ $INITIAL_TOKEN =~ ^-?[0-9]+$ ]] || die "PARLEY_CASSANDRA_INITIAL_TOKEN must be an integer, got '$INITIAL_TOKEN'"
    [[ $AUTO_BOOTSTRAP == true || $AUTO_BOOTSTRAP == false ]] || die "PARLEY_CASSANDRA_AUTO_BOOTSTRAP must be true or false"
    [[ $HINTED_HANDOFF == true || $HINTED_HANDOFF == false ]] || die "PARLEY_CASSANDRA_HINTED_HANDOFF must be true or false"
    [[ -z $RING_DELAY_MS || $RING_DELAY_MS =~ ^[0-9]+$ ]] || die "PARLEY_CASSANDRA_RING_DELAY_MS must be a number of milliseconds"
    [[ -z $DC || $DC =~ ^[A-Za-z0-9_-]+$ ]] || die "PARLEY_CASSANDRA_DC must be a plain name, got '$DC'"
}

# Roles and passwords (PARLEY_CASSANDRA_AUTH=true), idempotent: run after every
# start. Then cqlsh's settings: <state>/cassandra/cqlshrc names this node and,
# with authentication, a credentials file (mode 0600) of parley_admin, so
# `cqlsh --cqlshrc .state/cassandra/cqlshrc` needs no password on its command line.
ensure_roles() {
    # Files are replaced atomically and only removed when authentication is off:
    # concurrent test runs (several checkouts share one node) read them at any time.
    local marker=$CASS_DIR/auth-enabled
    if [[ $AUTH == true ]]; then
        pick_probe_python
        [[ -n $PROBE_PYTHON ]] || die "PARLEY_CASSANDRA_AUTH=true needs a Python with cassandra-driver (make venv)"
        "$PROBE_PYTHON" "$TEMPLATES/auth.py" "$NATIVE_PORT" "$PASSWORD_DIR" "$ADDRESS"
        (
            umask 077
            printf '[plain_text_auth]\nusername = parley_admin\npassword = %s\n' \
                "$(<"$PASSWORD_DIR/parley_admin")" >"$CASS_DIR/credentials.next"
        )
        mv -f "$CASS_DIR/credentials.next" "$CASS_DIR/credentials"
        # parley.localstate reads this: the node wants a login.
        touch "$marker"
    else
        rm -f "$marker" "$CASS_DIR/credentials"
    fi
    {
        printf '[connection]\nhostname = %s\nport = %s\n' "$ADDRESS" "$NATIVE_PORT"
        if [[ $AUTH == true ]]; then printf '[authentication]\ncredentials = %s\n' "$CASS_DIR/credentials"; fi
    } >"$CASS_DIR/cqlshrc.next"
    mv -f "$CASS_DIR/cqlshrc.next" "$CASS_DIR/cqlshrc"
}

check_ports_free() {
    local p name
    for p in "$NATIVE_PORT" "$STORAGE_PORT"; do
        name=PARLEY_CASSANDRA_PORT
        [[ $p == "$STORAGE_PORT" ]] && name=PARLEY_CASSANDRA_STORAGE_PORT
        if port_open "$p"; then
            printf 'cassandra: error: port %s (%s) is already in use by another process:\n' "$p" "$name" >&2
            describe_listener "$p" >&2
            printf 'cassandra: stop it, or choose another port with %s=...\n' "$name" >&2
            exit 1
        fi
    done
}

# --- jars --------------------------------------------------------------------

VERSION=""
# Use the cached lib/ when its marker names an acceptable version; otherwise
# download into a scratch folder and swap it in only once it is complete.
ensure_jars() {
    local cached="" v
    [[ -f $LIB_MARKER ]] && cached=$(<"$LIB_MARKER")
    for v in "${VERSIONS[@]}"; do
        if [[ $cached == "$v" ]]; then
            VERSION=$v
            log "using cached Cassandra $VERSION jars in $LIB_DIR"
            return 0
        fi
    done
    command -v mvn >/dev/null 2>&1 ||
        die "mvn (Apache Maven) not found; it is needed once to fetch the Cassandra jars: install maven (apt-get install -y maven)"
    for v in "${VERSIONS[@]}"; do
        if download_jars "$v"; then
            VERSION=$v
            return 0
        fi
    done
    die "could not fetch cassandra-all ${VERSIONS[*]} from Maven Central; see $LOG_DIR/mvn.log"
}

download_jars() {
    local v=$1 build=$CASS_DIR/build
    local tmp=$CASS_DIR/lib.partial
    log "fetching cassandra-all $v and its runtime dependencies with mvn (log: $LOG_DIR/mvn.log)"
    rm -rf "$build" "$tmp"
    mkdir -p "$build"
    # Run from a copy so mvn never writes anything into the repository.
    cp "$TEMPLATES/pom.xml" "$build/pom.xml"
    if ! mvn -B -f "$build/pom.xml" -Dcassandra.version="$v" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        >"$LOG_DIR/mvn.log" 2>&1; then
        printf 'cassandra: mvn failed for %s; last lines of %s:\n' "$v" "$LOG_DIR/mvn.log" >&2
        tail -n 20 "$LOG_DIR/mvn.log" >&2
        rm -rf "$tmp" "$build"
        return 1
    fi
    if [[ ! -f $tmp/cassandra-all-$v.jar ]]; then
        log "mvn did not produce cassandra-all-$v.jar"
        rm -rf "$tmp" "$build"
        return 1
    fi
    rm -rf "$LIB_DIR" "$build"
    mv "$tmp" "$LIB_DIR"
    printf '%s\n' "$v" >"$LIB_MARKER"
    log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars for Cassandra $v"
}

# --- config ------------------------------------------------------------------

# A rendered cassandra.yaml without its comments and blank lines.
settings_of() {
    grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$1" || true
}

# True when the running node's rendered settings differ from what a start now would render.
settings_changed() {
    local rendered=$CONF_DIR/cassandra.yaml.next changed=1
    render_conf "$rendered"
    # Settings only: a template whose comments changed restarts nobody.
    cmp -s <(settings_of "$rendered") <(settings_of "$CONF_DIR/cassandra.yaml") && changed=0
    rm -f "$rendered"
    return $((1 - changed))
}

# Re-rendered on every start so edits to the templates and port changes apply.
render_conf() {
    local out=${1:-$CONF_DIR/cassandra.yaml} sync
    case $COMMITLOG_SYNC in
        # Cassandra refuses commitlog_sync_period in group and batch modes.
        group) sync="commitlog_sync: group\ncommitlog_sync_group_window: ${GROUP_WINDOW_MS}ms" ;;
        batch) sync="commitlog_sync: batch" ;;
        periodic) sync="commitlog_sync: periodic\ncommitlog_sync_period: ${PERIODIC_MS}ms" ;;
    esac
    local snitch=SimpleSnitch
    mkdir -p "$CONF_DIR/triggers"
    if [[ -n $DC ]]; then
        # GossipingPropertyFileSnitch reads this from the classpath (conf/ is on it).
        snitch=GossipingPropertyFileSnitch
        printf 'dc=%s\nrack=rack1\n' "$DC" >"$CONF_DIR/cassandra-rackdc.properties"
    fi
    sed -e "s|@DATA_DIR@|$DATA_DIR|g" \
        -e "s|@CLUSTER_NAME@|$CLUSTER_NAME|g" \
        -e "s|@ADDRESS@|$ADDRESS|g" \
        -e "s|@SEEDS@|$SEEDS|g" \
        -e "s|@SNITCH@|$snitch|g" \
        -e "s|@INITIAL_TOKEN@|$INITIAL_TOKEN|g" \
        -e "s|@AUTO_BOOTSTRAP@|$AUTO_BOOTSTRAP|g" \
        -e "s|@HINTED_HANDOFF@|$HINTED_HANDOFF|g" \
        -e "s|@COMMITLOG_SYNC@|$sync|" \
        -e "s|@NATIVE_PORT@|$NATIVE_PORT|g" \
        -e "s|@STORAGE_PORT@|$STORAGE_PORT|g" \
        -e "s|@AUTHENTICATOR@|$([[ $AUTH == true ]] && echo PasswordAuthenticator || echo AllowAllAuthenticator)|" \
        -e "s|@AUTHORIZER@|$([[ $AUTH == true ]] && echo CassandraAuthorizer || echo AllowAllAuthorizer)|" \
        "$TEMPLATES/cassandra.yaml" >"$out"
    cp "$TEMPLATES/logback.xml" "$CONF_DIR/logback.xml"
}

# --- commands ----------------------------------------------------------------

# Serialises up/down, so two callers starting the node at once end up with one
# node: the second one waits, then finds it running.
take_lock() {
    mkdir -p "$CASS_DIR"
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$CASS_DIR/.lock"
    if ! flock -w $((READY_TIMEOUT + 600)) 9; then
        die "timed out waiting for another cassandra.sh holding $CASS_DIR/.lock"
    fi
}

cmd_up() {
    local pid running_port jamm
    local -a jvm_opts
    check_settings
    take_lock

    if pid=$(running_pid); then
        running_port=$(configured_port)
        if [[ $running_port != "$NATIVE_PORT" ]]; then
            die "already running (pid $pid) on port $running_port, not $NATIVE_PORT; run 'down' first"
        fi
        if settings_changed; then
            # Authentication, the commit-log mode and the like are read at start only.
            log "settings changed (authentication: $AUTH): restarting pid $pid with them"
            stop_pid "$pid"
        else
            pick_probe_python
            if is_ready "$NATIVE_PORT"; then
                log "already running and answering (pid $pid, port $NATIVE_PORT)"
                ensure_roles
                return 0
            fi
            # Alive but not answering yet: most likely still starting.
            log "already running (pid $pid) but not answering yet"
            wait_ready "$NATIVE_PORT"
            ensure_roles
            return
        fi
    fi
    rm -f "$PID_FILE"

    find_java
    check_ports_free
    mkdir -p "$LIB_DIR" "$CONF_DIR" "$DATA_DIR" "$LOG_DIR"
    ensure_jars
    render_conf

    jamm=$(find "$LIB_DIR" -maxdepth 1 -name 'jamm-*.jar' | head -n 1)
    [[ -n $jamm ]] || die "no jamm jar in $LIB_DIR; delete $LIB_DIR and run 'up' again"
    mapfile -t jvm_opts < <(grep -E '^-' "$TEMPLATES/jvm17-server.options")
    jvm_opts+=(
        "-Xms$HEAP" "-Xmx$HEAP"
        "-XX:ErrorFile=$LOG_DIR/hs_err_%p.log"
        # jamm measures object sizes for memtable accounting.
        "-javaagent:$jamm"
        # Keep stdout/stderr open: they go to logs/stdout.log, where fatal
        # start-up errors printed outside logback end up.
        -Dcassandra-foreground=yes
        "-Dcassandra.config=file://$CONF_DIR/cassandra.yaml"
        "-Dcassandra.storagedir=$DATA_DIR"
        "-Dcassandra.logdir=$LOG_DIR"
        "-Dcassandra.triggers_dir=$CONF_DIR/triggers"
        "-Dlogback.configurationFile=file://$CONF_DIR/logback.xml"
        # A lone node has no gossip peers to wait for or tell about its
        # shutdown (saves ~8 s per start and 2 s per stop).
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.shutdown_announce_in_ms=0
        # With authentication, the default superuser of a data directory that has
        # no roles yet (which cassandra/auth.py replaces) is made at once, not 10 s later.
        -Dcassandra.superuser_setup_delay_ms=0
        ${RING_DELAY_MS:+"-Dcassandra.ring_delay_ms=$RING_DELAY_MS"}
        # Never -Dcassandra.unsafesystem=true: it skips flushing schema
        # changes, so after a crash the node forgets keyspaces and its
        # commit-log replay drops their mutations (all history lost).
    )

    # Keep one previous log for post-mortems; a fresh system.log also means
    # the readiness log line can only come from this start.
    local f
    for f in system.log stdout.log; do
        if [[ -f $LOG_DIR/$f ]]; then mv -f "$LOG_DIR/$f" "$LOG_DIR/$f.prev"; fi
    done

    # Cassandra always calls mlockall(), which as root (CAP_IPC_LOCK) pins the
    # whole heap in RAM. A test node does not need that, so drop the capability.
    local -a launcher=(setsid nohup)
    if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null 2>&1; then
        launcher+=(setpriv --bounding-set -ipc_lock)
    fi

    log "starting Cassandra $VERSION (heap $HEAP, CQL $ADDRESS:$NATIVE_PORT, storage $STORAGE_PORT${DC:+, DC $DC, token $INITIAL_TOKEN})"
    # setsid: own session, so the node outlives this shell and a Ctrl-C in the
    # caller's terminal does not reach it. bash does not make background jobs
    # process-group leaders here, so setsid execs in place and $! is Java's pid.
    (
        cd "$CASS_DIR"
        exec "${launcher[@]}" "$JAVA" "${jvm_opts[@]}" \
            -cp "$CONF_DIR:$LIB_DIR/*" org.apache.cassandra.service.CassandraDaemon \
            </dev/null >"$LOG_DIR/stdout.log" 2>&1 9>&-  # 9: take_lock's fd
    ) &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    # Until the exec chain reaches java, the pid still shows a shell, and
    # running_pid would take the node for dead.
    local tries=0
    until running_pid >/dev/null || ! alive "$pid" || ((++tries > 50)); do
        sleep 0.1
    done

    if ! wait_ready "$NATIVE_PORT"; then
        printf 'cassandra: start-up failed; stopping what is left of it\n' >&2
        stop_pid "$pid" >/dev/null 2>&1 || true
        rm -f "$PID_FILE"
        return 1
    fi
    ensure_roles
}

# SIGTERM runs Cassandra's shutdown hook (drains and flushes memtables);
# SIGKILL only if that takes longer than STOP_TIMEOUT.
stop_pid() {
    local pid=$1 start=$SECONDS
    kill -TERM "$pid" 2>/dev/null || return 0
    while alive "$pid"; do
        if ((SECONDS - start >= STOP_TIMEOUT)); then
            log "still running after $STOP_TIMEOUT s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            while alive "$pid"; do sleep 0.2; done
            break
        fi
        sleep 0.5
    done
    log "stopped (pid $pid) after $((SECONDS - start)) s"
}

cmd_down() {
    local pid
    take_lock
    if pid=$(running_pid); then
        log "stopping (pid $pid)"
        stop_pid "$pid"
    else
        log "already stopped"
    fi
    rm -f "$PID_FILE"
}

cmd_status() {
    local pid
    if pid=$(running_pid); then
        echo "cassandra: running (pid $pid, port $(configured_port))"
        return 0
    fi
    echo "cassandra: stopped"
    return 3
}

cmd_wait() {
    local port=$NATIVE_PORT
    if running_pid >/dev/null; then
        # A running node answers on the port it was started with.
        port=$(configured_port)
    elif [[ ! -f $PID_FILE ]]; then
        log "no node started by this script (no $PID_FILE); waiting for anything answering on $port"
    fi
    wait_ready "$port"
}

usage() {
    echo "usage: $0 up|down|status|wait" >&2
    exit 2
}

[[ $# -eq 1 ]] || usage
case $1 in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    wait) cmd_wait ;;
    *) usage ;;
esac
