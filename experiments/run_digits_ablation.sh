#!/bin/bash
# The digits ablation (experiments/configs/digits_ablation.py): one workdir per strategy
# (the group-size x NTK-parameter part) or per start (near_duplicate, spread: random and
# CRC side by side) under ${ROOT:-runs/digits_ablation}/, so each finishes with its own
# summary.csv; then the reports. Rerunning resumes: finished workdirs are only re-read.
# Wall times go to $ROOT/times.txt.  Usage: PYTHON=.venv/bin/python nice -n 10 experiments/run_digits_ablation.sh
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python}
ROOT=${ROOT:-runs/digits_ablation}
JOBS=${JOBS:-"random crc:group_size=5 :near_duplicate :spread crc:group_size=1 crc:group_size=2 crc:group_size=10 crc:subset=all,group_size=5 crc:subset=all,group_size=1 crc:subset=all,group_size=2 crc:subset=all,group_size=10"}
mkdir -p "$ROOT"
start=$(date +%s)
for job in $JOBS; do
  t0=$(date +%s)
  if [[ $job == :* ]]; then      # a start variant: its own config, random and CRC
    name=start_${job#:}
    args=(--config="digits_ablation$job")
  else
    name=$(echo "$job" | tr ':,' '--')
    args=(--config=digits_ablation --config.strategies="('$job',)")
  fi
  $PY -m experiments.main "${args[@]}" --config.train.progress=False \
      --workdir="$ROOT/$name" > "$ROOT/$name.log" 2>&1
  echo "$job rc=$? $(( $(date +%s) - t0 ))s load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$ROOT/times.txt"
done
echo "total $(( $(date +%s) - start ))s" >> "$ROOT/times.txt"
