"""`crc-jax`: label your own images. A thin layer over crc_jax.project.Project.

    crc-jax init DIR --images PATH [--labels FILE.csv] [--classes a,b,c] [--image-size 32]
                     [--features FILE.npz|.csv | --backbone FILE.onnx|.msgpack [options]]
    crc-jax next DIR --budget N [--strategy crc] [--ssl NAME] [--model NAME] [--cold-start crc|random]
    crc-jax label DIR [--port 8765]
    crc-jax status DIR | predict DIR [--out FILE]
    crc-jax export DIR --format csv|label-studio --out FILE [--document-root DIR] [--label-config XML]
    crc-jax import DIR FILE [--skip-unmapped] [--document-root DIR] [--label-config XML]
    crc-jax serve-ml DIR [--port 9090] [--budget N] [--document-root DIR] [--label-studio-url URL]
    crc-jax --version

A round's defaults follow the project's kind (crc_jax.project.settings.KIND_DEFAULTS);
a round option given to `next`, `label` or `serve-ml` (and `next`'s --budget) is kept in
the project for later rounds until given again (`status` shows them).

A bad value, a damaged project or a file system that refuses a write (read-only, full)
ends with one line, `error: ...`, and exit status 2; nothing is half-written. Ctrl-C ends
with one line, `interrupted: ...`, and exit status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from crc_jax import __version__
from crc_jax.errors import UsageError
from crc_jax.runtime import command

log = logging.getLogger(__name__)


PAGE_BUDGET = 20   # images per round started from the page or Label Studio, unless kept


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 0..65535, got {text!r}")
    return value


def build_parser() -> command.ArgumentParser:
    from crc_jax import acquisition, ssl
    from crc_jax.runtime import devices
    from crc_jax.project.settings import RoundSettings, default_text

    d = RoundSettings()
    p = command.ArgumentParser(prog="crc-jax", description="Label your own images with active "
                                                            "semi-supervised learning (CRC).")
    p.add_argument("--version", action="version", version=f"crc-jax {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=command.ArgumentParser)

    s = sub.add_parser("init", help="scan a folder of images into a new project directory")
    s.add_argument("dir", type=Path)
    s.add_argument("--images", type=Path, required=True, help="folder tree of images")
    s.add_argument("--labels", type=Path, help="CSV with header path,label (or Label Studio JSON)")
    s.add_argument("--classes", help="class names, comma-separated")
    s.add_argument("--image-size", type=positive_int, help="side in pixels (32); not with "
                   "--features/--backbone")
    f = s.add_mutually_exclusive_group()
    f.add_argument("--features", type=Path, metavar="FILE",
                   help="one vector per image: .npz with arrays paths and features, or .csv "
                        "with a path column then the values (docs/labeling.md)")
    f.add_argument("--backbone", type=Path, metavar="FILE",
                   help="compute the vectors with a pretrained model: ONNX (.onnx, needs the "
                        "onnx extra) or a Flax checkpoint of a crc_jax model (with --backbone-model)")
    s.add_argument("--backbone-model", metavar="SPEC",
                   help="the crc_jax model of a Flax checkpoint, e.g. cnn or cnn:width=64")
    s.add_argument("--input-size", type=positive_int,
                   help="backbone input side, when the model does not fix it (Flax: 32)")
    s.add_argument("--mean", help="ONNX: per-channel mean on the 0-1 scale, e.g. 0.485,0.456,0.406 "
                                  "(default: the model's metadata, else none)")
    s.add_argument("--std", help="ONNX: per-channel std on the 0-1 scale (as --mean)")
    s.add_argument("--batch-size", type=positive_int, default=32, help="backbone batch (32)")
    s.add_argument("--onnx-provider", choices=("auto", "cpu"), default="auto",
                   help="auto: CUDA when onnxruntime has it, else CPU")
    s.add_argument("--feature-dtype", choices=("float32", "float16"), default="float32",
                   help="how the vectors are stored (float16: half the disk and memory)")

    def round_options(s):
        """The options of a round: None when not given (the project's kind and its kept
        options decide, crc_jax.project.settings); a given one is kept for later rounds."""
        kept = "; kept for later rounds"
        s.add_argument("--strategy", help=f"acquisition strategy ({default_text('strategy')}){kept}")
        s.add_argument("--ssl", choices=ssl.names(),
                       help=f"SSL algorithm ({default_text('ssl')}){kept}")
        s.add_argument("--cold-start", choices=acquisition.STRATEGIES.names("cold_start"),
                       help="first batch without labels: CRC on a random model, TypiClust, or "
                            f"random ({default_text('cold_start')}){kept}")
        s.add_argument("--model", help=f"model ({default_text('model')}){kept}")
        s.add_argument("--width", type=positive_int, help=f"width of the MLP or CNN ({d.width}){kept}")
        s.add_argument("--dropout", type=float,
                       help=f"dropout rate before the head ({d.dropout}; BALD needs > 0){kept}")
        s.add_argument("--feature-noise", type=float,
                       help=f"feature-vector pools: std of the noise of a view ({d.feature_noise}){kept}")
        s.add_argument("--epochs", type=positive_int, help=f"training epochs per round ({d.epochs}){kept}")
        s.add_argument("--steps-per-epoch", type=positive_int,
                       help=f"steps per epoch ({d.steps_per_epoch}){kept}")
        s.add_argument("--flip", action=argparse.BooleanOptionalAction,
                       help=f"horizontal flips in augmentation (on; --no-flip for text, digits){kept}")
        s.add_argument("--seed", type=int, help=f"seed of the round's randomness ({d.seed}){kept}")
        s.add_argument("--device", default="auto", choices=devices.REQUIRE,
                       help="platform the rounds must run on: stop at start, with JAX's reason, "
                            "when it is missing (auto: whatever JAX picks)")

    s = sub.add_parser("next", help="train, pick the next images to label, write queue.csv")
    s.add_argument("dir", type=Path)
    s.add_argument("--budget", type=positive_int,
                   help="images to pick (needed once; kept for later rounds)")
    round_options(s)

    s = sub.add_parser("label", help="serve the labeling page on 127.0.0.1")
    s.add_argument("dir", type=Path)
    s.add_argument("--port", type=port_number, default=8765, help="8765; 0: any free port")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    s.add_argument("--budget", type=positive_int,
                   help=f"images per round started from the page (the kept one, else {PAGE_BUDGET})")
    round_options(s)

    s = sub.add_parser("status", help="labels per class, rounds, accuracy estimate, learning curve")
    s.add_argument("dir", type=Path)
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("predict", help="CSV of predictions for every image (latest model)")
    s.add_argument("dir", type=Path)
    s.add_argument("--out", type=Path, help="CSV to write (default DIR/predictions.csv)")

    def label_studio_options(s):
        s.add_argument("--document-root", type=Path, default=document_root_default(),
                       help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT: ?d= paths are relative to it "
                            "(default: that variable, else /)")
        s.add_argument("--label-config", type=Path,
                       help="the Label Studio project's labeling config (XML): its data key, "
                            "Image and Choices names")

    s = sub.add_parser("export", help="write the labels as CSV (path,label), or every image as a "
                                      "Label Studio task with a labeling config beside it")
    s.add_argument("dir", type=Path)
    s.add_argument("--format", choices=("csv", "label-studio"), default="csv")
    s.add_argument("--out", type=Path, required=True)
    label_studio_options(s)
    s.add_argument("--ground-truth", action="store_true",
                   help="mark the exported annotations as Label Studio ground truth")

    s = sub.add_parser("import", help="add labels from a CSV (path,label) or a Label Studio export "
                                      "(JSON, JSON-MIN, CSV, TSV)")
    s.add_argument("dir", type=Path)
    s.add_argument("file", type=Path)
    label_studio_options(s)
    s.add_argument("--skip-unmapped", action="store_true",
                   help="import the other rows when some name no image of the project (listed)")

    s = sub.add_parser("serve-ml", help="serve the project's model as a Label Studio ML backend "
                                        "on 127.0.0.1")
    s.add_argument("dir", type=Path)
    s.add_argument("--port", type=port_number, default=9090, help="9090; 0: any free port")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    s.add_argument("--budget", type=positive_int,
                   help="images per round started from Label Studio (Start Training; the kept "
                        f"one, else {PAGE_BUDGET})")
    s.add_argument("--document-root", type=Path, default=document_root_default(),
                   help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (default: that variable, else /)")
    s.add_argument("--label-studio-url",
                   help="Label Studio's address for writing the queue fields after a round, with "
                        "the token in LABEL_STUDIO_API_KEY (default: what Label Studio sends to /setup)")
    round_options(s)
    return p


def document_root_default() -> Path:
    """Label Studio's own setting, when this shell has it; else its default, /."""
    for name in ("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "LOCAL_FILES_DOCUMENT_ROOT"):
        if os.environ.get(name):
            return Path(os.environ[name])
    return Path("/")


def given_options(args) -> dict:
    """The round options given on the command line ({field: value}), budget included."""
    from crc_jax.project.settings import KEPT

    return {name: getattr(args, name) for name in KEPT if getattr(args, name, None) is not None}


def settings_from(project, args):
    """The settings of the project's next round with the options given now (a bad one is
    a UsageError naming the option)."""
    with named_option():
        return project.round_settings(given_options(args))


def plan_from(project, settings, budget: int):
    """The round of `budget` images checked before any training, its two strategies built
    (the cold-start one too: it picks the first batch), or a UsageError naming the option."""
    with named_option():
        return project.plan(budget, settings)


@contextlib.contextmanager
def named_option():
    """A round option's ValueError ("cold_start: ...") as a UsageError naming the option
    as it is typed ("--cold-start: ..."); a damaged project passes as it is."""
    from crc_jax.project.store import ProjectError

    try:
        yield
    except ProjectError:
        raise
    except ValueError as err:
        field, _, problem = str(err).partition(": ")
        raise UsageError(f"--{field.replace('_', '-')}: {problem}") from None


def out_file(path: Path) -> Path:
    """--out: a new file in an existing folder."""
    if path.exists() or path.is_symlink():   # a dangling link too: never replaced
        link = " (a symbolic link)" if path.is_symlink() else ""
        raise UsageError(f"--out {path}: already exists{link}; choose a new file")
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: the folder {path.parent} does not exist")
    return path


def read_labels(project_call, path: Path):
    """Run an import of `path`; a file of the wrong shape (e.g. a JSON that is not a Label
    Studio export) is one line naming it, not a traceback."""
    try:
        return project_call()
    except (AttributeError, TypeError, KeyError, IndexError) as err:
        if path is None:
            raise
        raise UsageError(f"{path}: not a labels file of the expected shape ({type(err).__name__}: "
                         f"{err}); give a CSV with header path,label or a Label Studio JSON "
                         "export (a list of tasks)") from None


def feature_source(args):
    """The --features / --backbone source of `init`, or None (the pool is the images)."""
    from crc_jax.project import features

    backbone_only = {"--backbone-model": args.backbone_model, "--input-size": args.input_size,
                     "--mean": args.mean, "--std": args.std}
    if args.backbone is None:
        given = [name for name, value in backbone_only.items() if value is not None]
        if given:
            raise UsageError(f"{given[0]}: only with --backbone")
    if args.features is None and args.backbone is None:
        return None
    if args.image_size is not None:
        raise UsageError("--image-size: the pool is feature vectors with --features/--backbone "
                         "(a backbone's side is --input-size)")
    if args.features is not None:
        return features.embeddings_file(args.features)
    return features.backbone(args.backbone, model=args.backbone_model, input_size=args.input_size,
                             mean=args.mean, std=args.std, batch_size=args.batch_size,
                             provider=args.onnx_provider)


def cmd_init(args):
    from crc_jax.project import Project

    classes = [c for c in args.classes.split(",")] if args.classes else None
    source = feature_source(args)
    size = args.image_size or 32
    project, result = read_labels(lambda: Project.create(
        args.dir, args.images, image_size=size, classes=classes, labels_csv=args.labels,
        features=source, feature_dtype=args.feature_dtype), args.labels)
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}")
    for path, kept in result.duplicates:
        print(f"duplicate {path}: same bytes as {kept} (kept out)")
    if project.input_kind == "features":
        info = project.meta["features"]
        what = (f"images as {info['dim']}-d feature vectors ({info['dtype']}, from "
                f"{Path(info['source']['file']).name})")
    else:
        what = f"images at {size}x{size}"
    print(f"{args.dir}: {len(project)} {what}, "
          f"{len(result.duplicates)} exact duplicates kept out, {len(result.skipped)} unreadable "
          f"skipped; classes: {', '.join(project.classes) or '(none yet)'}; "
          f"{len(project.labels())} labels")


def cmd_next(args):
    from crc_jax.project import Project

    project = Project.open(args.dir)
    settings = settings_from(project, args)
    budget = project.budget(args.budget)
    if budget is None:
        raise UsageError("--budget: give the number of images to pick (it is kept for later "
                         "rounds)")
    ids = project.run_round(plan_from(project, settings, budget))
    project.keep_options(given_options(args))
    rows = project.queue()
    print(f"{len(ids)} images queued in {args.dir / 'queue.csv'}"
          f"{' (cold start: no model yet)' if project.rounds()[-1]['cold_start'] else ''}")
    print(f"{'id':>6}  {'predicted':<12} {'conf':>5}  path")
    for row in rows[:10]:
        print(f"{row['id']:>6}  {row['predicted'] or '-':<12} {row['confidence'] or '-':>5}  {row['path']}")
    if len(rows) > 10:
        print(f"   ... {len(rows) - 10} more; label them with: crc-jax label {args.dir}")


def cmd_label(args):
    from crc_jax.project.server import make_server

    project, settings, budget = serving_rounds(args)
    serve(project, args, make_server(project, host=args.host, port=args.port, settings=settings,
                                     budget=budget), what="labeling page", path="/")


def serving_rounds(args):
    """(project, settings, budget) of a server that starts rounds (the page, the ML
    backend), checked now, not when its first round starts."""
    from crc_jax.project import Project

    project = Project.open(args.dir)
    settings = settings_from(project, args)
    budget = project.budget(args.budget, PAGE_BUDGET)
    plan_from(project, settings, budget)
    if not project.classes:
        raise UsageError(f"{args.dir} has no classes yet: give --classes to init, or import labels")
    return project, settings, budget


def serve(project, args, server, *, what: str, path: str = "") -> NoReturn:
    """Keep the options given, say where `server` listens, serve until Ctrl-C."""
    project.keep_options(given_options(args))
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"{what}: http://{host}:{server.port}{path}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()   # Werkzeug's returns after catching Ctrl-C itself
    finally:
        server.server_close()
    raise KeyboardInterrupt   # so the command prints the one line and exits 130


def cmd_status(args):
    from crc_jax.project import Project

    st = Project.open(args.dir).status()
    if args.json:
        print(json.dumps(st, indent=2))
        return
    print(f"{st['images']} images, {st['labeled']} labeled, {st['skipped']} skipped, "
          f"{st['rounds']} rounds, queue {st['queued'] - st['pending']}/{st['queued']} answered")
    print(f"{st['kind']} project; next round: " + ", ".join(
        f"{name.replace('_', ' ')} {st['settings'][name]}"
        for name in ("model", "ssl", "strategy", "cold_start", "epochs")))
    if st["kept_options"]:
        print("kept options (give one again to change it): " + " ".join(
            option_text(name, value) for name, value in sorted(st["kept_options"].items())))
    for name, count in st["labels_per_class"].items():
        print(f"  {name:<16} {count}")
    if st["label_studio_ignored"]:
        print(f"Label Studio: {st['label_studio_ignored']} annotations ignored (not applied); "
              "each task's crc_note in Label Studio says why")
    acc = st["accuracy"]
    if acc:
        print(f"accuracy estimate (round {acc['round']}, on {acc['checked']} queued images labeled "
              f"after it predicted them): {acc['accuracy']:.3f} (95% CI {acc['low']:.3f}-{acc['high']:.3f})")
        print(f"learning curve: {st['learning_curve']}")
    else:
        print("accuracy estimate: none yet (it needs a trained round whose queue was labeled)")
    if st["crc_by_round"]:
        from crc_jax.project import report

        print("CRC decisions (chosen group vs the best group not chosen):")
        print("\n".join(report.crc_lines(st["crc_by_round"])))


def option_text(name: str, value) -> str:
    """A kept option as it is typed: --ssl mean_teacher, --no-flip."""
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {value}"


def cmd_predict(args):
    from crc_jax import durable
    from crc_jax.project import Project

    project = Project.open(args.dir)
    out = project.dir / "predictions.csv" if args.out is None else out_file(args.out)
    rows = project.predict()
    fields = ["id", "path", "predicted", "confidence", "label"]
    durable.write_csv(out, fields, [[r[f] for f in fields] for r in rows])
    print(f"{len(rows)} predictions written to {out}")


def cmd_export(args):
    from crc_jax.project import Project, exchange

    written = exchange.export(Project.open(args.dir), args.out, args.format,
                              document_root=args.document_root, label_config=args.label_config,
                              ground_truth=args.ground_truth)
    if args.format == "csv":
        print(f"{written['labels']} labels written to {args.out} (csv)")
        return
    model = (f"predictions of {written['model_version']}" if written["model_version"]
             else "no predictions (no trained round yet)")
    print(f"{written['tasks']} tasks written to {args.out}: {written['labeled']} labeled, "
          f"{written['queued']} queued (data.crc_rank), {model}; image URLs relative to the "
          f"document root {args.document_root}")
    if written["config"] is not None:
        print(f"labeling config written to {written['config']}")


def cmd_import(args):
    from crc_jax.project import Project, exchange

    project = Project.open(args.dir)
    before = len(project.labels())
    report = read_labels(lambda: exchange.import_labels(
        project, args.file, document_root=args.document_root, label_config=args.label_config,
        skip_unmapped=args.skip_unmapped), args.file)
    for reference, path in report.by_upload_name:
        print(f"matched by its uploaded file name (unique in the project): {reference} -> {path}")
    for reference, why in report.unmapped:
        print(f"not imported: {reference} ({why})")
    print(f"{report.added} new answers imported from {report.rows} labeled rows "
          f"({report.already} already saved, {len(report.unmapped)} unmapped; "
          f"{before} -> {len(project.labels())} labeled)")


def cmd_serve_ml(args):
    from crc_jax.project.label_studio_client import LabelStudioClient
    from crc_jax.project.ml_backend import make_server

    project, settings, budget = serving_rounds(args)
    client = None
    if args.label_studio_url:
        token = os.environ.get("LABEL_STUDIO_API_KEY", "")
        if not token:
            raise UsageError("--label-studio-url needs the token in LABEL_STUDIO_API_KEY")
        client = LabelStudioClient(args.label_studio_url, token)
    serve(project, args, make_server(project, host=args.host, port=args.port, settings=settings,
                                     budget=budget, document_root=args.document_root,
                                     client=client), what="Label Studio ML backend")


COMMANDS = {"init": cmd_init, "next": cmd_next, "label": cmd_label, "status": cmd_status,
            "predict": cmd_predict, "export": cmd_export, "import": cmd_import,
            "serve-ml": cmd_serve_ml}
# What Ctrl-C leaves, per command (the one line before exit status 130).
INTERRUPTED = {"next": "the round was not saved (labels untouched); run crc-jax next again",
               "label": "the labeling page stopped; every answer given is saved",
               "serve-ml": "the ML backend stopped; every answer saved is kept",
               "init": "the project was not made; run crc-jax init again"}


def interrupted_message(name: str) -> str:
    return INTERRUPTED.get(name, command.SAVED)


def main(argv=None) -> int:
    """crc-jax's entry point (a console script): the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from crc_jax.project.labels_log import LabelConflict

    parsed: dict = {}

    def work() -> None:
        args = build_parser().parse_args(argv)
        parsed["command"] = args.command
        if hasattr(args, "device"):   # a command that trains: say on what, stop on a missing GPU/TPU
            from crc_jax.runtime import devices

            log.info(devices.start(args.device, option="--device"))
        COMMANDS[args.command](args)

    # ValueError: a budget the pool cannot meet, a bad strategy option
    return command.run(work, interrupted=lambda: interrupted_message(parsed.get("command", "")),
                       errors=(LabelConflict, ValueError), own_process=argv is None,
                       log_format="%(levelname)s %(message)s")


if __name__ == "__main__":
    sys.exit(main())
