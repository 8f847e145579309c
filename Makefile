# sockact: `make run` runs the main job, `make test` installs what the tests need and runs them all.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' sockact/__init__.py)
# Debian packages the tests need: the parser and systemd bindings that the .deb runs on (the system
# tests use them under /usr/bin/python3), headers to build systemd-python in the venv, the load
# generator, systemd-nspawn/debootstrap for the containers, HAProxy for the fleet test, and
# prometheus_client for the metrics listener, and QEMU for the memory-limit test's virtual machine.
APT_TEST_DEPS := python3-httptools python3-systemd python3-venv libsystemd-dev pkg-config gcc \
	curl wrk systemd-container debootstrap lintian python3-pytest haproxy python3-prometheus-client python3-hypothesis \
	qemu-system-x86
# The HTTP engine's tests and its fuzzing, run again on Debian's own python3 and its httptools 0.1.1 (the .deb's).
HTTP_TESTS := tests/unit/http/test_http_engine.py tests/unit/http/test_http_vectors.py tests/unit/http/test_http_fuzz.py tests/unit/test_wsgi_adapter.py \
	tests/integration/test_http_server.py

.PHONY: run run-shell run-stop dev test deps apt-deps lint clean deb lintian bench bench-apt-deps

# Build the .deb, install it under systemd, start sockact.socket and show the first response. Where PID 1
# is not systemd, all that happens in a throwaway Debian 13 container: run-shell enters it, run-stop
# powers it off. Debian's python3 runs the tool: it is the interpreter the package targets. The tool
# installs with apt what it needs (build dependencies; systemd-container and debootstrap), nothing more.
run:
	/usr/bin/python3 tools/debrun.py start

run-shell:
	/usr/bin/python3 tools/debrun.py shell

run-stop:
	/usr/bin/python3 tools/debrun.py stop

# Dev mode: systemd-socket-activate holds 127.0.0.1:8000 and passes it exactly as a .socket unit would.
dev: deps
	@echo "sockact on http://127.0.0.1:8000/ (Ctrl-C stops it)"
	systemd-socket-activate -l 127.0.0.1:8000 --fdname=http -E PATH \
		$(VENV)/bin/sockact run sockact.apps.demo:app --workers 2

test: deps
	$(VENV)/bin/ruff check sockact tests
	$(VENV)/bin/mypy sockact/
	$(PY) -m pytest -q -p no:cacheprovider tests/unit
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests/integration
	$(PY) -m pytest -q -p no:cacheprovider tests/system
	PYTHONPATH=$(CURDIR) /usr/bin/python3 -m pytest -q -p no:cacheprovider $(HTTP_TESTS)

apt-deps:
	@missing=$$(for p in $(APT_TEST_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

deps: apt-deps $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The benchmark against gunicorn, granian, uWSGI, uvicorn (ASGI) and nginx; rewrites docs/benchmarks.md and the chart.
# Its Debian packages: the load generator, nginx (the machine's limit), systemd-socket-activate, and a
# compiler and Python headers to build uWSGI. The peers go into their own venv, built on the project's
# interpreter so that every server runs the same Python; sockact itself runs from the project's venv.
APT_BENCH_DEPS := wrk nginx systemd gcc python3-dev strace
BENCH_VENV := bench/.venv

bench: deps $(BENCH_VENV)/.installed
	$(VENV)/bin/ruff check bench
	$(BENCH_VENV)/bin/python -m bench

bench-apt-deps:
	@$(MAKE) --no-print-directory apt-deps APT_TEST_DEPS="$(APT_BENCH_DEPS)"

$(BENCH_VENV)/.installed: bench/requirements.txt | bench-apt-deps $(VENV)/.installed
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q -U pip
	$(BENCH_VENV)/bin/python -m pip install -q -r bench/requirements.txt
	touch $@

# dist/sockact_<version>_all.deb, built by Debian's tools from a clean copy of the tree; installs the
# build dependencies with apt first.
deb:
	packaging/build-deb.sh dist

lintian: deb
	lintian -I --pedantic dist/sockact_$(VERSION)_*.changes

lint: deps
	$(VENV)/bin/ruff check sockact tests

clean:
	rm -rf $(VENV) build dist *.egg-info
