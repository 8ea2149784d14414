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
# Note: Docker cannot run on the machine this file was written on, so this
# build has not been executed here; it is kept deliberately plain (official
# base image, `pip install ./clients/python .`, no tricks) so that it is correct by reading.

ARG PYTHON_IMAGE=python:3.11-slim

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
 && /opt/parley/bin/python -c "import history.migrate as m; assert m.load_migrations(), 'no CQL migrations in the wheel'"

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
