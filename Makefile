# Every target installs what it needs: a clean clone on bare Debian 12 (python3, venv,
# git, make, root) needs nothing else.
PYTHON ?= python3
# The service's interpreter must live outside home directories (the unit hides them), so
# not pyenv's python3 on PATH: Debian's own when there is one.
INSTALL_PYTHON ?= $(if $(wildcard /usr/bin/python3),/usr/bin/python3,$(PYTHON))
PORT   ?= 8765
VENV   := .venv
BIN    := $(VENV)/bin
APT_RUN  := libsystemd-dev pkg-config gcc python3-dev
# postgresql: the tests start their own throwaway cluster (tests/pgcluster.py) on a free
# port as `nobody`; Debian's package also creates a `main` cluster on 5432, which they
# leave alone.
APT_TEST := $(APT_RUN) curl php-cli systemd prometheus postgresql

.PHONY: run test test-fast campaign explore bench bench-outage bench-hosts lowest install apt-run apt-test clean

run: $(BIN)/.installed-run
	$(BIN)/vaultdrop run --sandbox --port $(PORT)

test: $(BIN)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The edit-test loop, under a minute: the unit tests and the model's regression scenarios,
# which drive the code in-process (no daemon or sandbox process, no exploration; the
# journal's PostgreSQL tests do start the throwaway cluster). `make test` is the whole
# suite, and what CI runs.
test-fast: $(BIN)/.installed-test
	$(BIN)/python -m pytest tests/unit tests/model/test_exactly_once_regressions.py $(PYTEST_ARGS)

campaign: $(BIN)/.installed-test
	$(BIN)/python -m pytest -m campaign tests/reliability $(PYTEST_ARGS)

# The job state machine explored for much longer than `make test` does (tests/model).
explore: $(BIN)/.installed-test
	$(BIN)/python -m pytest -m explore tests/model $(PYTEST_ARGS)

bench: $(BIN)/.installed-test
	$(BIN)/python benchmarks/run.py

bench-outage: $(BIN)/.installed-test
	$(BIN)/python benchmarks/outage.py

bench-hosts: $(BIN)/.installed-test
	$(BIN)/python benchmarks/several_hosts.py

# The lower bounds in pyproject.toml, installed exactly (pip has no lowest-resolution mode:
# a constraints file of name==lower does it) in a throwaway venv, then the unit tests and
# the CLI's: a bound nobody ran is a guess.
lowest:
	$(MAKE) apt-test
	rm -rf .venv-lowest
	$(PYTHON) -m venv .venv-lowest
	$(PYTHON) tools/lowest_constraints.py pyproject.toml > .venv-lowest/constraints.txt
	.venv-lowest/bin/pip install -q -c .venv-lowest/constraints.txt -e '.[test]'
	.venv-lowest/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/integration/test_cli.py $(PYTEST_ARGS)

# As root: the service under systemd (deploy/install.sh says what it does and what is next).
install:
	$(call apt_ensure,$(APT_RUN) python3-venv)
	PYTHON=$(INSTALL_PYTHON) deploy/install.sh

# Install Debian packages only when one is missing (apt-get update once, first).
define apt_ensure
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

apt-run:
	$(call apt_ensure,$(APT_RUN))

apt-test:
	$(call apt_ensure,$(APT_TEST))

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(BIN)/.installed-run: pyproject.toml | $(BIN)/python
	$(MAKE) apt-run
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed-test: pyproject.toml | $(BIN)/python
	$(MAKE) apt-test
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(BIN)/.installed-run

clean:
	rm -rf $(VENV) .venv-lowest build src/*.egg-info
