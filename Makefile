# Two commands set everything up: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint dist test-label-studio docs docs-campaign bench bench-cpu bench-scaling bench-accel lock clean

LOCK := requirements/lock.txt

# The tested, locked set (jax 0.10.x on Python 3.11); pyproject.toml keeps ranges for users.
# '.[dev]': the core install plus every extra the tests exercise (tfds, infinite), the test
# tools and the linters (pyproject.toml, [project.optional-dependencies]).
# install_locked.py is `pip install -c $(LOCK) -e '.[dev]'`, except that it never moves
# jax/jaxlib under an installed CUDA or TPU plugin (it keeps the plugin's jax, or stops
# with the commands to choose): a moved jax leaves the plugin unusable and JAX on the CPU.
$(STAMP): pyproject.toml $(LOCK) requirements/install_locked.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) requirements/install_locked.py --lock $(LOCK) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.main --config=digits_fixmatch --workdir=runs/digits_fixmatch

# two workers, a test file each at a time (its module fixtures built once); the shared XLA
# compilation cache (tests/conftest.py) starts empty, as on a fresh clone
test: $(STAMP)
	rm -rf .xla_cache
	$(PY) -m pytest -q -x -n 2 --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# ruff over the tree, mypy over crc_jax/ (settings in pyproject.toml); .ci/run runs it first
lint: $(STAMP)
	status=0; $(PY) -m ruff check . || status=1; $(PY) -m mypy || status=1; exit $$status

# sdist + wheel into dist/, their metadata checked, then the wheel installed without extras
# into a fresh venv beside the locked jax and run from there (tests/test_wheel.py)
dist: $(STAMP)
	rm -f dist/crc_jax-*
	$(PY) -m build -q --outdir dist .
	$(PY) -m twine check --strict dist/crc_jax-*
	CRC_JAX_DIST=dist $(PY) -m pytest -q -m slow tests/test_wheel.py

# crc-jax against a real Label Studio (installed into its own venv on first use, ~4 min);
# CRC_JAX_RECORD_LABEL_STUDIO=1 also rewrites tests/fixtures/label_studio/ from its exports
test-label-studio: $(STAMP)
	.ci/install_label_studio >/dev/null
	$(PY) -m pytest -q -m slow tests/test_label_studio_server.py

# docs/reliability.md's bad-input table, from real runs of every case (a few minutes)
docs: $(STAMP)
	PYTHONPATH=. $(PY) tests/reliability_doc.py

# the 10-kill fault campaign (slow), its table written into docs/reliability.md
docs-campaign: $(STAMP)
	CRC_JAX_UPDATE_DOCS=1 $(PY) -m pytest -q -m slow tests/test_faults.py::test_fault_campaign

bench: $(STAMP)
	$(PY) -m experiments.benchmarks.acquisition
	$(PY) -m experiments.benchmarks.train_step

# every CPU figure of docs/ and RESULTS.md again, one markdown block (about an hour on 2 cores);
# a subset: make bench-cpu BENCH_CPU_ARGS="--parts xla_cpu,train_step"
bench-cpu: $(STAMP)
	$(PY) -m experiments.benchmarks.cpu_all $(BENCH_CPU_ARGS)

# 1 device vs every device JAX sees; on a CPU-only machine: make bench-scaling SCALING_ARGS="--cpu_devices 4"
bench-scaling: $(STAMP)
	$(PY) -m experiments.benchmarks.scaling $(SCALING_ARGS)

# train step, fit epoch, CRC host vs device backend, empirical NTK; on a CPU: make bench-accel ACCEL_ARGS=--quick
# On an offline accelerator machine with its own Python: make bench-accel PY=python3 (installs nothing;
# docs/accelerators.md, "The accelerator benchmark").
bench-accel: $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP))
	$(PY) -m experiments.benchmarks.accel $(ACCEL_ARGS)

# Re-resolve the locked set in a fresh venv (run after changing dependencies in pyproject.toml).
# LOCK_FROM=$(LOCK) keeps every already locked version and resolves only what is new.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q $(if $(LOCK_FROM),-c $(LOCK_FROM)) -e '.[dev]'
	{ echo "# The tested set: make test / make demo install with '-c $(LOCK)' (Python 3.11)."; \
	  echo "# Regenerate: make lock (a fresh venv, pip install -e '.[dev]', pip freeze)."; \
	  .lock-venv/bin/pip freeze | grep -v '^-e \|^crc.jax\|^# Editable'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .xla_cache
