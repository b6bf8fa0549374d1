# The README's commands. Every target builds .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := data/sample
export DAGSTER_HOME := $(CURDIR)

.PHONY: setup demo test lint dev serve bench clean

$(BIN)/dagster: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU build, so nothing pulls a CUDA build
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/dagster

$(SAMPLE)/README.json: | $(BIN)/dagster
	$(BIN)/python -m imgsearch_pipeline.sample_data $(SAMPLE) --images 20000 --shards 4

# The whole pipeline on the sample data with the embedded backends, in one run.
demo: $(BIN)/dagster $(SAMPLE)/README.json
	IMGSEARCH_EMBEDDER=color-texture IMGSEARCH_DATASET=$(SAMPLE) \
	  $(BIN)/dagster asset materialize --select '*' -m imgsearch_pipeline -c config/demo.yaml
	@echo; echo "Recall report: var/tables/reports/recall_report.md"; echo
	@cat var/tables/reports/recall_report.md

test: $(BIN)/dagster
	$(BIN)/python -m pytest -q

lint: $(BIN)/dagster
	$(BIN)/ruff check .

# `make dev` / `make serve` listen on HOST (default 127.0.0.1) and PORT (default 3000 / 8000):
# `make serve PORT=9000` or `PORT=9000 make serve`.
HOST ?= 127.0.0.1

# The Dagster UI and daemon: http://127.0.0.1:3000
dev: $(BIN)/dagster
	IMGSEARCH_EMBEDDER=color-texture IMGSEARCH_DATASET=$(SAMPLE) $(BIN)/dagster dev -w workspace.yaml \
	  --host $(HOST) --port $(or $(PORT),3000)

# The search API and web page on the demo index (run `make demo` first): http://127.0.0.1:8000
# No access log: text queries ride in the URL and are the user's own.
serve: $(BIN)/dagster
	IMGSEARCH_EMBEDDER=color-texture $(BIN)/uvicorn imgsearch_pipeline.api.app:app \
	  --host $(HOST) --port $(or $(PORT),8000) --no-access-log

# Benchmarks at the prototype's scale (benchmarks/README.md); BENCH_ARGS=--quick for a short run.
bench: $(BIN)/dagster
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf var data
