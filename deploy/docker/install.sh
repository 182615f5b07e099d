#!/bin/sh
# install.sh PACKAGE_DIR[EXTRAS]...: installs danlu packages (copied into /src by the Dockerfile)
# into the virtual environment /opt/venv, every third-party version from constraints.txt.
#   TORCH_INDEX_URL  when set, torch==$TORCH_VERSION comes from that index first (CPU or CUDA
#                    builds: a plain PyPI `torch` would be a multi-GB CUDA build on CPU images)
#   DS_BUILD_OPS=0   DeepSpeed installs as pure Python (its setup imports torch: no isolation)
set -eu
here=$(dirname "$0")
[ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv
pip="/opt/venv/bin/pip --disable-pip-version-check --no-cache-dir"
# setuptools: --no-build-isolation builds below need it in the venv (3.12 venvs have none).
$pip install --upgrade "pip==26.3" "setuptools==84.2.1"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    $pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION:?}"
fi
if [ -n "${EXTRA_REQUIREMENTS:-}" ]; then
    # e.g. "deepspeed bitsandbytes" / "vllm": installed before the danlu packages, same pins.
    # shellcheck disable=SC2086
    $pip install --no-build-isolation --constraint "$here/constraints.txt" $EXTRA_REQUIREMENTS
fi
$pip install --constraint "$here/constraints.txt" "$@"
# Fail the build, not the first request, when a package is missing.
/opt/venv/bin/pip check
