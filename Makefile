# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Every install is pinned by constraints.txt (torch 2.13.0, the CPU build on local disk).
PYTHON ?= python3
VENV := .venv
PEERS := .venv-peers
PIP := $(VENV)/bin/pip install -q -c constraints.txt
PY := $(VENV)/bin/python

.PHONY: demo test venv peers bench weights clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[cli,kit,test]"
	touch $@

venv: $(VENV)/.installed

# The organisers' tools, in their own environment (hear-validator imports TensorFlow,
# hearbaseline needs librosa < 0.10): used by the tests and the benchmark.
$(PEERS)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q -c constraints.txt hearvalidator==2021.0.2
	$(PEERS)/bin/pip install -q -c constraints.txt --no-deps hearbaseline==2021.1.1
	$(PEERS)/bin/pip install -q -c constraints.txt "librosa<0.10" "setuptools<81" psutil
	$(PEERS)/bin/pip install -q -c constraints.txt --no-deps -e .
	touch $@

peers: $(PEERS)/.installed

demo: venv
	$(PY) examples/demo.py

test: venv peers
	TYMPAN_PEERS_PYTHON=$(CURDIR)/$(PEERS)/bin/python $(PY) -m pytest -q -rs

bench: venv peers
	$(PY) benchmarks/long_audio.py --peers-python $(PEERS)/bin/python

weights: venv
	$(PY) -m tympan.train.v0

clean:
	rm -rf $(VENV) $(PEERS) demo-out build src/*.egg-info
