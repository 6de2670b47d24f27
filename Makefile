# Two commands set everything up: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow docs docs-campaign bench bench-cpu bench-scaling bench-accel lock clean

LOCK := requirements/lock.txt

# The tested, locked set (jax 0.10.x on Python 3.11); pyproject.toml keeps ranges for users.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.main --config=digits_fixmatch --workdir=runs/digits_fixmatch

test: $(STAMP)
	$(PY) -m pytest -q -x

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# docs/reliability.md's bad-input table, from real runs of every case (a few minutes)
docs: $(STAMP)
	$(PY) -m experiments.reliability_doc

# the 10-kill fault campaign (slow), its table written into docs/reliability.md
docs-campaign: $(STAMP)
	CRC_JAX_UPDATE_DOCS=1 $(PY) -m pytest -q -m slow tests/test_faults.py::test_fault_campaign

bench: $(STAMP)
	$(PY) -m experiments.benchmarks.acquisition
	$(PY) -m experiments.benchmarks.train_step

# every CPU figure of README.md and RESULTS.md again, one markdown block (about an hour on 2 cores);
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
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip && .lock-venv/bin/pip install -q -e '.[test]'
	{ echo "# The tested set: make test / make demo install with '-c $(LOCK)' (Python 3.11)."; \
	  echo "# Regenerate: make lock (a fresh venv, pip install -e '.[test]', pip freeze)."; \
	  .lock-venv/bin/pip freeze | grep -v '^-e \|^crc.jax'; } > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) runs .pytest_cache
