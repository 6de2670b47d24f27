"""Old vs new dependency stack, side by side in one run: the same benchmarks, alternated.

Each benchmark command runs once per stack (a Python interpreter and the checkout it
imports), old and new alternating so machine load falls on both alike; the table rows the
benchmarks print are paired by their first cell and shown with the new/old ratio of every
number. Wall time of each command is reported too.

Command:  python -m experiments.benchmarks.stacks \
              --old /path/old_venv/bin/python:/path/old_checkout \
              --new .venv/bin/python:.
Expect:   minutes (it runs train_step at a reduced batch and acquisition's scoring and NTK
          parts twice each); recorded in RESULTS.md ("Old vs new stack").
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time

from experiments.benchmarks import start_in_child

BENCHMARKS = {
    "train_step": ["-m", "experiments.benchmarks.train_step", "--batch_size", "16", "--steps", "2"],
    "acquisition_scoring": ["-m", "experiments.benchmarks.acquisition", "--part", "scoring"],
    "acquisition_ntk": ["-m", "experiments.benchmarks.acquisition", "--part", "ntk"],
}
NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:e[-+]?\d+)?")


def run(python: str, checkout: str, argv: list[str]) -> tuple[str, float]:
    start = time.time()
    out = subprocess.run([python, *argv], cwd=checkout, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{python} {' '.join(argv)} failed:\n{out.stderr[-2000:]}")
    return out.stdout, time.time() - start


def table_rows(text: str) -> dict[str, list[float]]:
    """{first cell: numbers of the other cells} of every markdown table row."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[1]) <= set("-: "):
            continue
        numbers = [float(m.replace(",", "")) for c in cells[1:] for m in NUMBER.findall(c.replace("×", ""))]
        if numbers:
            rows[cells[0]] = numbers
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="PYTHON:CHECKOUT of the old stack")
    parser.add_argument("--new", required=True, help="PYTHON:CHECKOUT of the new stack")
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    args = parser.parse_args(argv)
    start_in_child()   # JAX that cannot start here will not start for either stack
    stacks = {"old": args.old.split(":", 1), "new": args.new.split(":", 1)}
    for name in args.only.split(","):
        outputs = {}
        for label, (python, checkout) in stacks.items():
            outputs[label] = run(python, checkout, BENCHMARKS[name])
        (old_text, old_s), (new_text, new_s) = outputs["old"], outputs["new"]
        print(f"\n### {name}: wall {old_s:.0f} s (old) vs {new_s:.0f} s (new), new/old {new_s / old_s:.2f}\n")
        print("| row | old | new | new/old |\n| --- | --- | --- | --- |")
        old_rows, new_rows = table_rows(old_text), table_rows(new_text)
        for key, old_numbers in old_rows.items():
            new_numbers = new_rows.get(key)
            if not new_numbers or len(new_numbers) != len(old_numbers):
                continue
            ratios = ", ".join(f"{n / o:.2f}" if o else "–" for o, n in zip(old_numbers, new_numbers))
            print(f"| {key} | {old_numbers} | {new_numbers} | {ratios} |")
        for label, (text, _) in outputs.items():
            print(f"\n<details><summary>{label} output</summary>\n\n{text}\n</details>")


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
