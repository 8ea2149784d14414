# shellcheck shell=bash
# Shared helpers for the local-infrastructure scripts (sourced, not run).
# PARLEY_STATE_DIR holds everything the local stack writes; it is git-ignored.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PARLEY_STATE_DIR="${PARLEY_STATE_DIR:-$REPO_ROOT/.state}"
# The physical path: the scripts write it into the servers' config files and restart a
# server whose config changed, so a state folder reached through a symlink (a git
# worktree's .state -> the main checkout's) must not look like another one.
if [ -d "$PARLEY_STATE_DIR" ]; then PARLEY_STATE_DIR="$(cd "$PARLEY_STATE_DIR" && pwd -P)"; fi
export PARLEY_STATE_DIR

die() { echo "error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

# port_in_use PORT: true when something listens on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# describe_port PORT: who listens there (best effort, for error messages).
describe_port() {
  if command -v ss >/dev/null 2>&1; then ss -ltnpH "sport = :$1" 2>/dev/null | head -n 3 || true; fi
}

_APT_UPDATED=""
# apt_install PKG...: installs Debian packages when missing (we run as root on
# dev machines and CI; elsewhere say what to install instead of failing obscurely).
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them: install them by hand"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "missing ${missing[*]}: run 'apt-get install ${missing[*]}' as root"
    sudo="sudo"
  fi
  note "installing ${missing[*]} (apt)"
  if [ -z "$_APT_UPDATED" ]; then
    $sudo apt-get update -qq >/dev/null || die "apt-get update failed; install ${missing[*]} by hand"
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed; install them by hand"
}

# java_major JAVA: the feature version of a java binary ("17"), or nothing.
java_major() {
  "$1" -XshowSettings:properties -version 2>&1 | awk -F'= *' '/java.specification.version/ {print $2; exit}'
}

# find_java17: prints a Java 17 binary (JAVA_HOME, Debian's JVM folder, PATH),
# the same search order deploy/local/cassandra.sh uses.
find_java17() {
  local c
  local candidates=()
  [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME/bin/java")
  for c in /usr/lib/jvm/java-17-openjdk*/bin/java; do candidates+=("$c"); done
  command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
  for c in "${candidates[@]}"; do
    [ -x "$c" ] && [ "$(java_major "$c")" = 17 ] && { echo "$c"; return 0; }
  done
  return 1
}

# require_java17: Cassandra 5.0 runs on Java 17 here; installs Debian's
# OpenJDK 17 when there is none.
require_java17() {
  find_java17 >/dev/null && return 0
  note "Java 17 not found (JAVA_HOME, /usr/lib/jvm, PATH); Cassandra needs it"
  apt_install openjdk-17-jre-headless
  find_java17 >/dev/null || die "Java 17 is still missing after installing openjdk-17-jre-headless; set JAVA_HOME to a Java 17"
}

# require_cmd CMD PKG: installs PKG (apt) when CMD is not on PATH.
require_cmd() {
  command -v "$1" >/dev/null 2>&1 && return 0
  apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || die "$1 not found after installing $2"
}
