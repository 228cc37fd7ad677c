# `make run` and `make test` each do all set-up on a fresh machine, then run the main job / the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
NPM ?= npm
CHROMIUM ?= /usr/bin/chromium
WEB_DEPS := web/node_modules/.installed
WEB_BUILD := latentgraph/web/index.html
WEB_SOURCES := $(shell find web/src web/index.html web/vite.config.ts web/tsconfig.json web/package.json -type f 2>/dev/null)

.PHONY: run test test-python test-web bench setup web clean

setup: $(STAMP)

# torch goes in first and explicitly: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

$(WEB_DEPS): web/package-lock.json
	cd web && $(NPM) ci --no-audit --no-fund
	touch $@

$(WEB_BUILD): $(WEB_DEPS) $(WEB_SOURCES)
	cd web && $(NPM) run build

web: $(WEB_BUILD)

# Debian's Chromium for the browser tests (playwright-core drives it; no browser download).
$(CHROMIUM):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

# workflows/img2img.json starts from input/example.png (inpaint.json from input/inpaint_example.png): put the
# bundled ones there unless the user has them.
run: $(STAMP) $(WEB_BUILD)
	test -e input/example.png || { mkdir -p input && cp workflows/example.png input/example.png; }
	test -e input/inpaint_example.png || { mkdir -p input && cp workflows/inpaint_example.png input/inpaint_example.png; }
	$(VENV)/bin/latentgraph serve

test: test-python test-web

# -P: the repository root is not put on sys.path, so the folders are only importable as the
# installed latentgraph.* packages (a module can never load twice under two names).
test-python: $(STAMP)
	$(PY) -P -m pytest -q

test-web: $(STAMP) $(WEB_BUILD) $(CHROMIUM)
	cd web && $(NPM) test
	cd web && CHROMIUM=$(CHROMIUM) $(NPM) run test:e2e

bench: $(STAMP)
	$(PY) -P bench/executor.py
	$(PY) -P bench/sd.py
	$(PY) -P bench/server.py

clean:
	rm -rf $(VENV) build *.egg-info web/node_modules latentgraph/web
