#!/bin/sh
# Prepares any danlu base image (python:*-slim, nvidia/cuda:*-ubuntu*) the same way, in the build
# and the runtime stage: a Python 3 with venv (the CUDA images have none), the non-root user
# `danlu` (uid/gid 10001, the uid Kubernetes' securityContext names) and its data directory.
set -eu
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import venv, ensurepip" 2>/dev/null; then
    apt-get update
    # Ubuntu 24.04's python3 is 3.12 (danlu needs >= 3.11); versions follow the pinned base tag.
    apt-get install -y --no-install-recommends python3 python3-venv python3-dev ca-certificates
    rm -rf /var/lib/apt/lists/*
fi
if [ "${DANLU_BUILD_TOOLS:-0}" = 1 ]; then
    # JIT-compiled ops (DeepSpeed) need a C++ compiler at run time.
    apt-get update
    apt-get install -y --no-install-recommends g++ ninja-build
    rm -rf /var/lib/apt/lists/*
fi
getent group danlu >/dev/null || groupadd --system --gid 10001 danlu
getent passwd danlu >/dev/null ||
    useradd --system --uid 10001 --gid danlu --home-dir /var/lib/danlu --shell /usr/sbin/nologin danlu
mkdir -p /var/lib/danlu
chown danlu:danlu /var/lib/danlu
