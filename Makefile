# Two commands do all the setup (see README): `make book` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BROWSER_STAMP := $(VENV)/.browser-installed

.PHONY: book test lab notebooks clean browser-test vendor

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## book: set up, build the HTML book, print the page to open (and open it where there is a screen)
book: $(STAMP)
	$(BIN)/python tools/build.py
	@echo "Open this page in a browser: file://$(CURDIR)/_build/html/index.html"
	@if [ -z "$$CI" ] && { [ -n "$$DISPLAY" ] || [ "$$(uname)" = Darwin ]; }; then \
		$(BIN)/python -m webbrowser -t "file://$(CURDIR)/_build/html/index.html" >/dev/null 2>&1 || true; fi

## test: set up, then run every test (unit, property, nbval on every notebook, the -W book build)
test: $(STAMP)
	$(BIN)/python -m pytest

## lab: set up, then open the notebooks in JupyterLab
lab: $(STAMP)
	$(BIN)/jupyter lab book/

## notebooks: re-run every chapter top to bottom and store its outputs and widget state
## (NB="book/03_triangle.ipynb book/04_variance_branch.ipynb" re-runs only those)
notebooks: $(STAMP)
	$(BIN)/python tools/run_notebooks.py $(NB)

$(BROWSER_STAMP): $(STAMP) requirements-browser.txt
	$(BIN)/python -m pip install --quiet -r requirements-browser.txt
	touch $(BROWSER_STAMP)

## browser-test: set up, build the book if it is stale, then test every page and the JupyterLab widget in headless Chromium
browser-test: $(BROWSER_STAMP)
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -n 0 tests/browser

## wheel-test: build the wheel, install it into a fresh venv outside the checkout, grade a sample file with
## bnbackprop-check there, check that a missing extra is named, then import every extra's module (a few minutes)
.PHONY: wheel-test
wheel-test: $(STAMP)
	$(BIN)/python -m pytest -n 0 tests/wheel

## vendor: re-fetch the vendored MathJax and widget JavaScript from npm (versions in scripts/vendor.sh)
vendor: $(STAMP)
	bash scripts/vendor.sh

## clean: remove the built book, the test caches and numba's compiled kernels (which do not notice an edit
## of the modules fast.py calls into, such as _nontemporal and _prefetch)
clean:
	rm -rf _build .pytest_cache .hypothesis
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete

## bench: install the benchmark extras (PyTorch CPU, tqdm, threadpoolctl) and time every backward
## (a few minutes; BENCH_ARGS=--quick for about one). OPENBLAS_CORETYPE/L2_SIZE are unset for this
## command only: they slow a current numpy (see benchmarks/README.md).
.PHONY: bench
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
