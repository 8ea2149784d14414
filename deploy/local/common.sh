# Shared helpers for the local-infrastructure scripts (sourced, not run).
# PARLEY_STATE_DIR holds everything the local stack writes; it is git-ignored.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PARLEY_STATE_DIR="${PARLEY_STATE_DIR:-$REPO_ROOT/.state}"
export PARLEY_STATE_DIR

die() { echo "error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

# port_in_use PORT: true when something listens on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# apt_install PKG...: installs Debian packages when missing (we run as root on
# dev machines and CI; elsewhere say what to install instead of failing obscurely).
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  note "installing ${missing[*]} (apt)"
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed; install ${missing[*]} by hand"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}
