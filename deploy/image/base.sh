#!/usr/bin/env bash
# Builds a Python 3.11 base image from Debian's packages alone (mmdebstrap, then
# `podman import`), for building the Dockerfile where the official python image
# cannot be pulled (a machine that reaches Debian's mirror and PyPI but no
# container registry). The image test (tests/e2e/test_image.py) uses it as
# PYTHON_IMAGE. Python is Debian bookworm's python3 (3.11), linked as `python`
# like the official image.
#
# The machine's own extra CAs (/usr/local/share/ca-certificates, e.g. a
# TLS-inspecting proxy's) are trusted inside, so pip in the build reaches PyPI
# as it does on the host. Packages come from the host's apt sources.
#
#   deploy/image/base.sh [TAG]     (default localhost/parley-base:bookworm)
set -euo pipefail

tag="${1:-localhost/parley-base:bookworm}"
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  --customize-hook='ln -s /usr/bin/python3 "$1/usr/local/bin/python"' \
  --customize-hook='for c in /usr/local/share/ca-certificates/*.crt; do
      if [ -e "$c" ]; then cp "$c" "$1/usr/local/share/ca-certificates/"; fi
    done; chroot "$1" update-ca-certificates >/dev/null' \
  bookworm "$work/rootfs.tar" "$sources"
podman import --quiet "$work/rootfs.tar" "$tag" >/dev/null
echo "$tag"
