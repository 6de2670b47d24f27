"""Every published result table, recomputed from its committed per-trial files.

    python -m experiments.tables check         exit 1, naming each block that differs
    python -m experiments.tables write         rewrite every marked block from its files
    python -m experiments.tables list          each table: its per-trial files, where shown
    python -m experiments.tables export RUNDIR OUT.csv
                                               a run's per-step CSV (docs/results/README.md)

A table or number that README.md or a page under docs/ prints sits between two markers,

    <!-- table:NAME -->
    | ... |
    <!-- /table -->

each alone on its line around a table, or inline around a number in a sentence (the
closing marker then on the opening marker's line). NAME is an
entry of experiments/published.py, a function that computes exactly that text from
committed per-trial CSV files (docs/results/README.md lists them). `check` fails on a block
whose text differs from the recomputed one, on an unknown NAME, on a published entry that
no page shows, and on a markdown table row that prints a spread ("±") or an interval outside
every marker: a number nobody recomputes.
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from crc_jax.errors import UsageError
from experiments.markers import BLOCK

ROOT = Path(__file__).resolve().parent.parent
EXIT_MISMATCH = 1
# A table row printing a spread or an interval: a result, which must come from a marker.
RESULT_ROW = re.compile(r"^\|.*(±|\[[-−]?[0-9]+\.[0-9]+, [-−]?[0-9]+\.[0-9]+\])")


@dataclass(frozen=True)
class Block:
    """One marked block: the page, the line it starts on, the table's name, its text."""

    path: Path
    line: int
    name: str
    text: str


def pages(root: Path = ROOT) -> list[Path]:
    """The pages whose numbers are checked: README.md and every markdown file under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    return [Block(path, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
            for m in BLOCK.finditer(text)]


def unmarked_results(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the first row of each table outside every marker whose rows print a
    spread or an interval."""
    text = BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text())
    found, previous = [], -1
    for i, line in enumerate(text.splitlines(), start=1):
        if RESULT_ROW.search(line):
            if i != previous + 1:
                found.append((i, line))
            previous = i
    return found


def same(shown: str, computed: str) -> bool:
    return shown.strip() == computed.strip()


def check(root: Path = ROOT) -> list[str]:
    """One line per problem (empty when every published number recomputes)."""
    from experiments import published

    problems, shown, cache = [], set(), {}
    for path in pages(root):
        rel = path.relative_to(root)
        for b in blocks(path):
            shown.add(b.name)
            if b.name not in published.TABLES:
                problems.append(f"{rel}:{b.line}: unknown table {b.name!r} (not in "
                                "experiments/published.py)")
                continue
            if b.name not in cache:
                cache[b.name] = recompute(b.name, root)
            if isinstance(cache[b.name], Exception):
                problems.append(f"{rel}:{b.line}: table {b.name!r} cannot be recomputed: "
                                f"{cache[b.name]}")
            elif not same(b.text, cache[b.name]):
                problems.append(f"{rel}:{b.line}: table {b.name!r} differs from its per-trial "
                                f"files {', '.join(published.TABLES[b.name].sources)}:\n"
                                + diff(b.text.strip(), cache[b.name].strip()))
        for line, text in unmarked_results(path):
            problems.append(f"{rel}:{line}: a result row outside every <!-- table:NAME --> "
                            f"marker (add it to experiments/published.py): {text[:80]}")
    for name in sorted(set(published.TABLES) - shown):
        problems.append(f"table {name!r} is published nowhere (no <!-- table:{name} --> in "
                        "README.md or docs/)")
    return problems


def recompute(name: str, root: Path):
    """Table NAME's text from its per-trial files, or the error that stopped it (a missing
    or malformed file)."""
    from experiments import published

    try:
        return published.TABLES[name].render(root)
    except FileNotFoundError as err:
        return FileNotFoundError(f"per-trial file {Path(err.filename).relative_to(root)} "
                                 "is missing")
    except (OSError, KeyError, ValueError, TypeError) as err:
        return err


def diff(shown: str, computed: str) -> str:
    import difflib

    lines = difflib.unified_diff(shown.splitlines(), computed.splitlines(), "shown",
                                 "recomputed", lineterm="", n=0)
    return "\n".join("    " + line for line in list(lines)[2:])


def write(root: Path = ROOT) -> tuple[list[Path], list[str]]:
    """Rewrite every known block from its per-trial files: the pages that changed, and one
    line per block left as it was (unknown, or its files missing)."""
    from experiments import published

    changed, skipped = [], []
    for path in pages(root):
        text = path.read_text()

        def fill(m, path=path):
            body = (recompute(m.group(1), root) if m.group(1) in published.TABLES
                    else KeyError(f"unknown table {m.group(1)!r}"))
            if isinstance(body, Exception):
                skipped.append(f"{path.relative_to(root)}: {m.group(1)} left as it was ({body})")
                return m.group(0)
            body = body.strip()
            if m.group(2).startswith("\n"):        # the opening marker alone on its line
                body = f"\n\n{body}\n\n"
            return f"<!-- table:{m.group(1)} -->{body}<!-- /table -->"

        new = BLOCK.sub(fill, text)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed, skipped


# --------------------------------------------------------------------------- export

EXPORT_FIELDS = ("strategy", "trial", "step", "num_labeled", "test_accuracy",
                 "min_test_loss_epoch", "acquired_labels", "crc_chosen_min", "crc_reach",
                 "crc_gap", "crc_resolution", "crc_tie")


def export(workdir: Path) -> list[dict]:
    """Per journal step of a run directory (its summary.csv names the strategies and
    trials): the summary.csv columns, the epoch of minimal
    test loss, the acquired images' labels (space-separated) and, for CRC steps, the
    smallest chosen score under record["crc"] and the decision's reach, gap, resolution
    and tie (crc_jax.acquisition.crc.diagnostics.summary)."""
    from crc_jax import durable
    from crc_jax.acquisition.crc import diagnostics
    from crc_jax.run.rundir import strategy_dirname

    from experiments import report

    rows = []
    for spec in dict.fromkeys(r["strategy"] for r in report.load_rows([workdir])):
        folder = workdir / strategy_dirname(spec)
        for journal in sorted(folder.glob("trial_*/journal.jsonl"),
                              key=lambda p: int(p.parent.name.split("_")[1])):
            trial = int(journal.parent.name.split("_")[1])
            for e in durable.Journal(journal).entries():
                record = e.get("record") or {}
                crc = record.get("crc") or {}
                found = diagnostics.summary({**(e.get("initial_record") or {}), **record}) or {}
                rows.append({
                    "strategy": spec, "trial": trial, "step": e["step"],
                    "num_labeled": e["num_labeled"], "test_accuracy": e["test_accuracy"],
                    "min_test_loss_epoch": e.get("min_test_loss_epoch", ""),
                    "acquired_labels": " ".join(str(x) for x in e.get("labels") or []),
                    "crc_chosen_min": min(crc["chosen_scores"]) if crc.get("chosen_scores") else "",
                    **{f"crc_{k}": ("" if found.get(k) is None else found[k])
                       for k in ("reach", "gap", "resolution", "tie")}})
    return rows


def write_csv(path: Path, fields, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def main(argv=None) -> int:
    """The command (`python -m experiments.tables`): the exit status (1: a table differs)."""
    from crc_jax.runtime import command

    from experiments.report import ReportError

    parser = command.ArgumentParser(prog="python -m experiments.tables",
                                    description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="recompute every marked table; exit 1 on a difference")
    sub.add_parser("write", help="rewrite every marked table from its per-trial files")
    sub.add_parser("list", help="the published tables and their per-trial files")
    exp = sub.add_parser("export", help="a run directory's per-step CSV")
    exp.add_argument("workdir")
    exp.add_argument("out")

    def work() -> int:
        args = parser.parse_args(argv)
        if args.command == "check":
            problems = check()
            for p in problems:
                print(p)
            n = sum(len(blocks(p)) for p in pages())
            print(f"{n} marked blocks in {len(pages())} pages: "
                  + (f"{len(problems)} problem(s)" if problems else "all recomputed from their "
                     "per-trial files"))
            return EXIT_MISMATCH if problems else 0
        if args.command == "write":
            changed, skipped = write()
            for path in changed:
                print(f"rewrote {path.relative_to(ROOT)}")
            for line in skipped:
                print(line)
            return EXIT_MISMATCH if skipped else 0
        if args.command == "list":
            from experiments import published

            where: dict[str, list[str]] = {}
            for path in pages():
                for b in blocks(path):
                    where.setdefault(b.name, []).append(str(path.relative_to(ROOT)))
            for name, table in published.TABLES.items():
                print(f"{name}: {', '.join(table.sources)} -> {', '.join(where.get(name, ['-']))}")
            return 0
        out = Path(args.out)
        if out.exists():
            raise UsageError(f"{out} exists: give a new file")
        write_csv(out, EXPORT_FIELDS, export(Path(args.workdir)))
        print(f"wrote {out}")
        return 0

    return command.run(work, errors=(ReportError,), own_process=argv is None)


if __name__ == "__main__":
    sys.exit(main())
