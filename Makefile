# Targets CI calls too (.ci/run): install, lint, test. `make run` starts everything locally.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PKGS   := schemas producer deadletters scheduler consumer gateway jobstream bench tests examples

.PHONY: install run test lint bench clean distclean

install: $(STAMP)

# The stamp is newer than pyproject.toml once its dependencies are installed, so a second
# `make install` does nothing; editing pyproject.toml reinstalls.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

# `make run BROKERS=3`: a three-node Kafka cluster (replication 3, min.insync.replicas 2).
BROKERS ?= 1
run: install
	$(BIN)/jobstream dev --brokers $(BROKERS)

# `ensure` resolves the Kafka jars (Maven) and finds or installs redis-server before
# pytest starts, so a missing tool fails here with a clear message, not mid-suite.
test: install
	$(BIN)/python -m jobstream.cli.stack ensure
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(PKGS)

# The benchmarks live in bench/, beside the packages: a checkout runs them, the wheel has none.
bench: install
	$(BIN)/python -m bench

# clean keeps the Kafka jars (.data/kafka-*): resolving them again takes minutes.
clean:
	if [ -d .data ]; then find .data -mindepth 1 -maxdepth 1 ! -name 'kafka-[0-9]*' -exec rm -rf {} +; fi

distclean:
	rm -rf .data $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
