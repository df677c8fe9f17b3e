# modelport — build, serve, test. Every target creates the environment it needs.
#   make serve                     convert the bundled examples and serve them on :5000
#   make test                      the whole test suite (what CI runs)
#   make convert MODEL=SRC NAME=N  convert one model into ./models
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
SERVE_VENV := $(VENV)/serve
DEV_VENV := $(VENV)/dev
SERVE_PY := $(SERVE_VENV)/bin/python
DEV_PY := $(DEV_VENV)/bin/python
REPOSITORY ?= models
PORT ?= 5000
HOST ?= 0.0.0.0
VERSION ?= 1
TORCH_INDEX ?=
PYTEST_ARGS ?=
ENGINE ?= $(shell command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && echo docker || (command -v podman >/dev/null 2>&1 && echo podman || echo docker))

.PHONY: grpc-proto install-browser example-models install install-serve install-dev serve examples convert score test lint bench clean image image-convert image-pmml image-empty image-pmml-empty

install: install-serve install-dev

install-serve: $(SERVE_VENV)/.stamp
install-dev: $(DEV_VENV)/.stamp

# The serving environment: runtime dependencies only (both engines, each imported lazily).
$(SERVE_VENV)/.stamp: runtime/requirements.txt runtime/requirements-pmml.txt runtime/requirements-common.txt
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_PY) -m pip install -q --upgrade pip
	$(SERVE_PY) -m pip install -q -r runtime/requirements.txt -r runtime/requirements-pmml.txt
	touch $@

# The converter + test environment. torch goes first, pinned, so nothing pulls a CUDA build.
$(DEV_VENV)/.stamp: convert/requirements.txt convert/requirements-nodeps.txt requirements-dev.txt runtime/requirements.txt \
		score/requirements.txt score/requirements-spark.txt
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_PY) -m pip install -q --upgrade pip
	$(DEV_PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(DEV_PY) -m pip install -q torch==2.13.0 -r convert/requirements.txt -r requirements-dev.txt
	$(DEV_PY) -m pip install -q --no-deps -r convert/requirements-nodeps.txt
	touch $@

# ---- convert one model ---------------------------------------------------------------------
#   make convert MODEL=path/or/url/or/archive NAME=mymodel [REPOSITORY=models] [VERSION=1] [ARGS="--force ..."]
#   MODEL may be omitted when XQUERY_ADDR/MODEL_ID/MODEL_VERSION/GUID name the model repository.
convert: install-dev
	@test -n "$(NAME)" || { echo "usage: make convert MODEL=SOURCE NAME=NAME [REPOSITORY=models] [ARGS=...]" >&2; exit 64; }
	$(DEV_PY) -m convert $(if $(MODEL),"$(MODEL)",--from-repository) --repository "$(REPOSITORY)" --name "$(NAME)" --version "$(VERSION)" $(ARGS)

# ---- batch scoring on Spark (docs/batch.md) ---------------------------------------------------
#   make score MODEL=NAME INPUT=table-or-image-folder OUTPUT=dir [REPOSITORY=models] [MASTER=local[*]] [ARGS="--keep id"]
score: install-dev
	@test -n "$(MODEL)" && test -n "$(INPUT)" && test -n "$(OUTPUT)" || { echo "usage: make score MODEL=NAME INPUT=PATH OUTPUT=PATH [REPOSITORY=models] [MASTER=...] [ARGS=...]" >&2; exit 64; }
	$(DEV_PY) -m score "$(INPUT)" --repository "$(REPOSITORY)" --model "$(MODEL)" --output "$(OUTPUT)" $(if $(MASTER),--master "$(MASTER)") $(ARGS)

# ---- example models --------------------------------------------------------------------------
# Seeded Keras 3 models built (not committed) into build/examples/: colour_classifier.keras (64x64
# RGB, labels.txt), tabular_regressor.keras (8 features), plus labels.txt and sample.jpg.
EXAMPLES_DIR ?= build/examples
examples: $(EXAMPLES_DIR)/.stamp
$(EXAMPLES_DIR)/.stamp: examples/make_examples.py examples/labels.txt examples/sample.jpg $(DEV_VENV)/.stamp
	$(DEV_PY) examples/make_examples.py $(EXAMPLES_DIR)
	touch $@

# ---- serve ---------------------------------------------------------------------------------
# `make serve` with no arguments converts the example models into ./models (once) and serves them.
# `make serve REPOSITORY=dir` serves an existing repository as it is.
EXAMPLE_MODELS := $(REPOSITORY)/colour-classifier/1/modelport.json $(REPOSITORY)/tabular-regressor/1/modelport.json
example-models: $(EXAMPLE_MODELS)
$(REPOSITORY)/colour-classifier/1/modelport.json: $(EXAMPLES_DIR)/.stamp
	$(DEV_PY) -m convert $(EXAMPLES_DIR)/colour_classifier.keras --repository $(REPOSITORY) \
		--name colour-classifier --labels examples/labels.txt --force
$(REPOSITORY)/tabular-regressor/1/modelport.json: $(EXAMPLES_DIR)/.stamp
	$(DEV_PY) -m convert $(EXAMPLES_DIR)/tabular_regressor.keras --repository $(REPOSITORY) \
		--name tabular-regressor --force

serve: install-serve $(if $(filter models,$(REPOSITORY)),example-models)
	$(SERVE_PY) -m runtime --repository $(REPOSITORY) --host $(HOST) --port $(PORT)

# ---- benchmarks ------------------------------------------------------------------------------
#   make bench [BENCH_SECONDS=5]   raw onnxruntime, modelport, a bare aiohttp server, MLServer and Flask+TF side
#                                  by side under wrk -> docs/benchmarks.md + docs/benchmarks.png (~10 min fresh)
BENCH_SECONDS ?= 5
BENCH_DIR ?= build/bench
MLSERVER_VENV := $(VENV)/mlserver
$(MLSERVER_VENV)/.stamp: bench/requirements-mlserver.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install -q -r bench/requirements-mlserver.txt
	touch $@
$(DEV_VENV)/.bench-stamp: bench/requirements.txt $(DEV_VENV)/.stamp
	$(DEV_PY) -m pip install -q -r bench/requirements.txt
	touch $@
$(BENCH_DIR)/.stamp: bench/build_models.py $(wildcard convert/*.py convert/formats/*.py) $(DEV_VENV)/.stamp
	$(DEV_PY) bench/build_models.py $(BENCH_DIR)
	touch $@
bench: install-serve $(DEV_VENV)/.bench-stamp $(MLSERVER_VENV)/.stamp $(BENCH_DIR)/.stamp
	command -v wrk >/dev/null || { $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get update -qq && \
		$$([ "$$(id -u)" = 0 ] || echo sudo) apt-get install -y -qq wrk; }
	$(DEV_PY) bench/run.py --models $(BENCH_DIR) --seconds $(BENCH_SECONDS)
	$(DEV_PY) bench/score_bench.py --models $(BENCH_DIR) --write-docs

# ---- images ------------------------------------------------------------------------------------
#   make image-convert                      the converter image (modelport-convert:latest)
#   make image [MODEL=path NAME=n ARGS=..]  a serve image with the model baked in (modelport-serve:latest);
#                                           no MODEL: the example image classifier
#   make image-pmml MODEL=x.pmml NAME=n     a PMML serve image (JRE + pypmml, no onnxruntime)
#   make image-empty                        a serve image with no model, fetched at start (modelport-serve-empty)
#   make image-pmml-empty                   the same for PMML (modelport-serve-pmml-empty; KServe's modelport-pmml runtime)
# ENGINE=docker|podman (auto-detected). Paths in ARGS are seen inside the build as /context/<path>.
CONVERT_TAG ?= modelport-convert:latest
TAG ?= modelport-serve:latest
PMML_TAG ?= modelport-serve-pmml:latest
TORCH_VERSION ?= 2.13.0
BUILD_FLAGS ?= $(if $(filter podman,$(ENGINE)),--pull=never --format docker)
IMAGE_MODEL := $(or $(MODEL),$(EXAMPLES_DIR)/colour_classifier.keras)
IMAGE_NAME := $(or $(NAME),$(if $(MODEL),model,colour-classifier))
IMAGE_ARGS := $(or $(ARGS),$(if $(MODEL),,--labels /context/examples/labels.txt))

build/wheels/.stamp:
	mkdir -p build/wheels
	cp /opt/wheels/torch-$(TORCH_VERSION)+cpu-*.whl build/wheels/ 2>/dev/null || true
	touch $@

image-convert: build/wheels/.stamp
	$(ENGINE) build $(BUILD_FLAGS) -f Dockerfile.convert -t $(CONVERT_TAG) \
		$(if $(TORCH_INDEX),--build-arg TORCH_INDEX=$(TORCH_INDEX)) .

image: image-convert $(if $(MODEL),,examples)
	$(ENGINE) build $(BUILD_FLAGS) -f Dockerfile.serve --target serve -t $(TAG) \
		--build-arg CONVERT_IMAGE=$(CONVERT_TAG) --build-arg SOURCE="$(IMAGE_MODEL)" \
		--build-arg NAME="$(IMAGE_NAME)" --build-arg CONVERT_ARGS="$(IMAGE_ARGS)" .

# A serve image with no model: it fetches an ONNX model at start from XQUERY_ADDR + MODEL_ID (or MODEL_URL).
EMPTY_TAG ?= modelport-serve-empty:latest
image-empty: image-convert
	$(ENGINE) build $(BUILD_FLAGS) -f Dockerfile.serve --target serve -t $(EMPTY_TAG) \
		--build-arg CONVERT_IMAGE=$(CONVERT_TAG) .

PMML_EMPTY_TAG ?= modelport-serve-pmml-empty:latest
image-pmml-empty: image-convert
	$(ENGINE) build $(BUILD_FLAGS) -f Dockerfile.serve --target serve-pmml -t $(PMML_EMPTY_TAG) \
		--build-arg CONVERT_IMAGE=$(CONVERT_TAG) .

image-pmml: image-convert
	@test -n "$(MODEL)" || { echo "usage: make image-pmml MODEL=path/to/model.pmml|sklearn.pkl NAME=name" >&2; exit 64; }
	$(ENGINE) build $(BUILD_FLAGS) -f Dockerfile.serve --target serve-pmml -t $(PMML_TAG) \
		--build-arg CONVERT_IMAGE=$(CONVERT_TAG) --build-arg SOURCE="$(MODEL)" \
		--build-arg NAME="$(IMAGE_NAME)" --build-arg CONVERT_ARGS="$(ARGS)" .

# Debian's Chromium for the page tests (tests/page, driven by Playwright; no browser is downloaded).
install-browser:
	command -v chromium >/dev/null || { $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get update -qq && \
		$$([ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# ---- tests ---------------------------------------------------------------------------------
# The whole suite: runtime, converters (real TensorFlow/PyTorch/scikit-learn models), PMML on a
# real JVM, reliability. The server under test runs from .venv/serve, so the runtime is proven slim.
test: install
	$(DEV_PY) -m pytest -q -rs $(PYTEST_ARGS)

lint: install-dev
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .

# The V2 gRPC code in runtime/proto/ is generated from runtime/proto/grpc_predict_v2.proto and committed.
# grpcio-tools (requirements-dev.txt) bundles protoc; its protobuf major must match the runtime's pin.
grpc-proto: install-dev
	$(DEV_PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		runtime/proto/grpc_predict_v2.proto
