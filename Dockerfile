# syntax=docker/dockerfile:1
#
# One image for the four Parley services. The Helm chart (deploy/helm/parley)
# runs it once per service and picks the program with the container's
# `command`: parley-gateway, parley-router, parley-presence or parley-history
# (console scripts from pyproject.toml). CMD only sets a default for
# `docker run parley`.
#
#   docker build -t parley:0.1.0 .
#   docker run --rm -e PARLEY_ENV=development -e PARLEY_GATEWAY_HOST=0.0.0.0 \
#     -e PARLEY_REDIS_URL=redis://host.docker.internal:6380/0 -p 50051:50051 parley:0.1.0
#
# The web chat (services/gateway/web) is package data of the gateway: run
# `make web` before building, or the build stops at the check below instead of
# shipping a gateway without its page (`make image` runs both, with podman).
#
# No HEALTHCHECK, on purpose: Kubernetes ignores it (the chart's probes are
# native gRPC health checks, on PARLEY_<SERVICE>_HEALTH_PORT), and for plain
# `docker run` the four services share the image, so one command could not
# check each of them. Probe with grpcurl or `grpc_health_probe` instead (see
# deploy/helm/parley/README.md).
#
# Built and run in a test: tests/e2e/test_image.py (part of make test), with
# podman and buildah from Debian, daemonless. The test machines reach no
# container registry (`podman pull docker.io/library/python:3.11.7-slim-bookworm`:
# "dial tcp: lookup registry-1.docker.io ...: no such host"), so the test builds
# on a base made from Debian's packages (deploy/image/base.sh: mmdebstrap,
# bookworm's python3 3.11) passed as PYTHON_IMAGE; the default below is the
# official image. Builds use `--isolation chroot` and the container runs with
# `buildah run --isolation chroot`: `podman run` fails there (crun: "cgroups in
# hybrid mode not supported"; with --cgroups=disabled, setrlimit RLIMIT_NOFILE
# and RLIMIT_NPROC "Operation not permitted").
# The base is pinned by version (Python and Debian release); pin its digest too
# where the registry is reachable:
#   skopeo inspect docker://python:3.11.7-slim-bookworm --format '{{.Digest}}'
# and set PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:<digest>.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# ---- build: install the project (non-editable) and its pinned dependencies into a venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# A compiler only for dependencies that might lack a wheel for this platform
# (e.g. cassandra-driver's optional C extensions on arm64); it stays in this
# stage and never reaches the runtime image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/parley
WORKDIR /src
# Only what the package builds read: metadata, the READMEs they name, the
# server (services/) and the client distribution it depends on (clients/python/:
# parley-client, which carries the generated parley.v1 code), installed together.
COPY pyproject.toml README.md ./
COPY services ./services
COPY clients/python ./clients/python
# Non-editable: the wheel carries the code plus its Lua scripts, CQL
# migrations and web files (package-data), so /src is not needed at run time.
# pip byte-compiles the installed modules, which matters because the pods run
# with a read-only root filesystem.
# The import check fails the build, not the first pod, if a module or its
# package data is missing from the wheel.
RUN /opt/parley/bin/pip install --no-cache-dir ./clients/python . \
 && /opt/parley/bin/python -c "import gateway.app, router.app, presence.app, history.app, history.migrate" \
 && /opt/parley/bin/python -c "import history.migrate as m; assert m.load_migrations(), 'no CQL migrations in the wheel'" \
 && /opt/parley/bin/python -c "from gateway.static import WEB_DIR as w; \
assert all((w / f).is_file() for f in ('index.html', 'style.css', 'app.js')), 'no web page in the wheel: run make web'"

# ---- runtime: the venv on a clean base, as an unprivileged user
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="parley" \
      org.opencontainers.image.description="Parley real-time messaging backend: gateway, router, presence, history" \
      org.opencontainers.image.licenses="Apache-2.0"
# Same base image and same path as the build stage: the venv's interpreter
# links stay valid when copied.
COPY --from=build /opt/parley /opt/parley
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it
# (the chart's securityContext uses the same 10001).
RUN groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin parley
ENV PATH=/opt/parley/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    PARLEY_ENV=production
USER 10001:10001
WORKDIR /tmp
# gateway 50051 (+ WebSocket 8080), router 50052, presence 50053, history 50054.
EXPOSE 50051 8080 50052 50053 50054
# The services handle SIGTERM themselves (graceful drain), so they run as
# PID 1 directly, in exec form, with no shell in between to swallow signals.
CMD ["parley-gateway"]
