#!/bin/bash
# The digits_study (experiments/configs/digits_study.py), one workdir per strategy under
# runs/digits_study/, so each strategy finishes with its own summary.csv; then the
# supervised row, then the report over all of them. Wall times go to
# runs/digits_study_times.txt. Usage: PYTHON=.venv/bin/python experiments/run_digits_study.sh
cd "$(dirname "$0")/.." || exit 1
# On a GPU, JAX takes 75% of its memory at start-up; a second process on the same GPU (the
# README ran crc_infinite and supervised beside this chain) would then run out of memory.
# Allocate on demand instead (docs/accelerators.md, "Two processes on one GPU").
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
PY=${PYTHON:-python}
STRATEGIES=${STRATEGIES:-"random bald badge coreset typiclust probcover entropy margin confidence egl crc crc_infinite:arch=mlp"}
start=$(date +%s)
for s in $STRATEGIES; do
  t0=$(date +%s)
  $PY -m experiments.main --config=digits_study --config.strategies="('$s',)" \
      --config.train.progress=False --workdir="runs/digits_study/${s%%:*}" \
      > "runs/digits_study_${s%%:*}.log" 2>&1
  echo "$s rc=$? $(( $(date +%s) - t0 ))s" >> runs/digits_study_times.txt
done
t0=$(date +%s)
$PY -m experiments.main --config=digits_study:supervised --config.train.progress=False \
    --workdir=runs/digits_study/supervised > runs/digits_study_supervised.log 2>&1
echo "supervised rc=$? $(( $(date +%s) - t0 ))s" >> runs/digits_study_times.txt
echo "total $(( $(date +%s) - start ))s" >> runs/digits_study_times.txt
