# egress-xds: `make demo` runs the control plane and a real sidecar on the bundled examples,
# `make test` runs the whole suite. Both set everything up first (venv, iptables, iproute2).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-packages test lint unit demo demo-down bench golden clean

setup: $(STAMP) system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The network-namespace lab needs iptables and iproute2; install them when missing and root.
system-packages:
	@missing=""; \
	command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "note:$$missing missing and not root: network-namespace tests will skip"; \
	  fi; \
	fi

lint: setup
	$(BIN)/ruff check egress_xds tests $(wildcard bench)
	$(BIN)/lint-imports
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest -q

unit: setup
	$(BIN)/pytest -q -m "not envoy and not netns and not soak"

golden: setup
	$(BIN)/pytest -q tests/golden --update-golden

demo: setup
	$(BIN)/python -m egress_xds.demo up

demo-down: setup
	$(BIN)/python -m egress_xds.demo down

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
