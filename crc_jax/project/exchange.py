"""Labels in and out: a CSV with header `path,label`, or Label Studio's tasks and exports.

Import: a row names its image by
  * its path relative to the images folder (as in queue.csv), or an absolute path inside
    that folder;
  * a Label Studio local-files URL, `/data/local-files/?d=P`, where P is relative to
    Label Studio's document root (an option: LOCAL_FILES_DOCUMENT_ROOT, `/` by default);
  * a Label Studio upload URL, `/data/upload/<project>/<8 hex>-<name>`, only when exactly
    one image of the project has that file name (such rows are listed in the output).
The path must name exactly one image of the project by its full path: a row whose file
lies outside the images folder, in another folder, or was kept out by `init` (a
duplicate, an unreadable file) is *unmapped*, never matched by its file name. Unmapped
rows are listed; nothing is imported unless `skip_unmapped` asks to import the others.
Everything is checked before anything is saved.

Export: `csv` (path,label of labeled images) or `label-studio` (every image as a task,
crc_jax.project.label_studio, with its labeling config written beside it), each into a new
file outside the project directory (whose files crc-jax itself writes: an export named
like one of them would be read back as the project's); an existing file, or a symbolic
link even when it points nowhere, is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import posixpath
import re
import urllib.parse
from pathlib import Path

from crc_jax import durable
from crc_jax.project import label_studio, label_studio_config
from crc_jax.project.store import ProjectError

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
UPLOADS = "/data/upload/"
FORMATS = ("csv", "label-studio")
LISTED = 5  # unmapped rows named in a one-line error


class PathIndex:
    """The image paths and classes a labels file is checked against (a project, or a scan).

    images_root: the images folder (absolute paths and local-files URLs resolve against
    it; without it they are unmapped). document_root: Label Studio's local-files root.
    """

    def __init__(self, paths: list, classes: list, images_root: os.PathLike | None = None,
                 document_root: str | os.PathLike = "/"):
        self.paths, self.classes = list(paths), list(classes)
        self.images_root = Path(os.path.realpath(images_root)) if images_root else None
        self.document_root = Path(os.path.realpath(document_root))
        self._id_of = {p: i for i, p in enumerate(self.paths)}
        self._by_name: dict[str, list] = {}
        for i, p in enumerate(self.paths):
            self._by_name.setdefault(posixpath.basename(p), []).append(i)

    def locate(self, reference: str) -> tuple[int | None, str]:
        """(image id, how it matched) or (None, why it cannot be mapped)."""
        ref = str(reference).strip()
        if not ref:
            return None, "no image path"
        if "://" in ref:
            parsed = urllib.parse.urlsplit(ref)
            if parsed.path.startswith((label_studio.LOCAL_FILES, UPLOADS)):
                ref = urllib.parse.urlunsplit(("", "", parsed.path, parsed.query, ""))
            else:
                return None, "a web URL, not a file of the images folder"
        if ref.startswith(label_studio.LOCAL_FILES):
            d = urllib.parse.parse_qs(urllib.parse.urlsplit(ref).query).get("d")
            if not d:
                return None, "a local-files URL without ?d="
            return self._locate_file(self.document_root / d[0].lstrip("/"),
                                     f" (document root {self.document_root})")
        if ref.startswith(UPLOADS):
            name = UPLOAD_PREFIX.sub("", posixpath.basename(urllib.parse.unquote(
                urllib.parse.urlsplit(ref).path)))
            matches = self._by_name.get(name, [])
            if len(matches) == 1:
                return matches[0], "upload"
            return None, (f"a file uploaded to Label Studio; {len(matches)} images of the "
                          f"project are named {name!r}")
        if ref.startswith("/"):
            return self._locate_file(Path(ref), "")
        rel = posixpath.normpath(ref)
        if rel == ".." or rel.startswith("../"):
            return None, "leaves the images folder"
        if rel in self._id_of:
            return self._id_of[rel], "path"
        return None, "no image of the project at this path"

    def _locate_file(self, path: Path, context: str) -> tuple[int | None, str]:
        if self.images_root is None:
            return None, "an absolute path (the images folder is not known here)"
        path = Path(os.path.normpath(path))
        path = Path(os.path.realpath(path.parent)) / path.name  # symlinked folders
        if not path.is_relative_to(self.images_root):
            return None, f"outside the images folder {self.images_root}{context}"
        rel = path.relative_to(self.images_root).as_posix()
        if rel in self._id_of:
            return self._id_of[rel], "path"
        return None, f"no image of the project at {rel!r}"


@dataclasses.dataclass
class Resolution:
    """Rows resolved against a PathIndex."""

    labels: dict          # {image id: class name}
    unmapped: list        # [(reference, reason)]
    by_upload_name: list  # [(reference, project path)]: matched by a unique file name


def describe_unmapped(unmapped: list) -> str:
    listed = "; ".join(f"{ref!r} ({why})" for ref, why in unmapped[:LISTED])
    more = f"; and {len(unmapped) - LISTED} more" if len(unmapped) > LISTED else ""
    return listed + more


def resolve(index: PathIndex, rows: list) -> Resolution:
    """Map (reference, class) rows to images; unknown classes and contradictions raise."""
    labels: dict[int, str] = {}
    unmapped: list = []
    by_upload: list = []
    for reference, label in rows:
        image, how = index.locate(reference)
        if image is None:
            unmapped.append((reference, how))
            continue
        if how == "upload":
            by_upload.append((reference, index.paths[image]))
        if image in labels and labels[image] != label:
            raise ProjectError(f"{index.paths[image]!r} is given two labels in the file: "
                               f"{labels[image]!r} and {label!r}; nothing was imported")
        labels[image] = label
    if index.classes:
        bad = sorted(set(labels.values()) - set(index.classes))
        if bad:
            raise ProjectError(f"unknown class {bad[0]!r} (classes: {', '.join(index.classes)}); "
                               "nothing was imported")
    return Resolution(labels, unmapped, by_upload)


def resolve_rows(index: PathIndex, rows: list) -> dict:
    """{id: class name}; any unmapped row raises, naming it (nothing imported)."""
    resolution = resolve(index, rows)
    if resolution.unmapped:
        raise ProjectError(f"{len(resolution.unmapped)} labeled rows name no image of this "
                           f"project: {describe_unmapped(resolution.unmapped)}; nothing was imported")
    return resolution.labels


# -- reading files ---------------------------------------------------------------------------

def read_labels_file(path: Path, *, names=None) -> list[tuple[str, str]]:
    """(reference, class name) of every labeled row: a CSV `path,label`, or a Label Studio
    export (JSON, JSON-MIN, CSV, TSV). `names`: the LabelingNames of the Label Studio
    project (its data key and Choices name); None reads crc-jax's own names."""
    if not path.is_file():
        raise ProjectError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    try:
        return _read_labels_text(text, path, names)
    except csv.Error as err:   # a field over csv's size limit, a NUL byte
        raise ProjectError(f"{path}: not a labels CSV ({err}); give a CSV with header "
                           "path,label or a Label Studio export") from None


def _read_labels_text(text: str, path: Path, names) -> list[tuple[str, str]]:
    if text.lstrip().startswith(("[", "{")):
        return label_studio.read_export(text, path, names)
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in first_line else ","
    header = next(csv.reader([first_line], delimiter=delimiter), [])
    header = [h.strip() for h in header]
    data_key = (names or label_studio_config.DEFAULT_NAMES).data_key
    if header[:2] == ["path", "label"]:
        return _read_path_label(text, path)
    if data_key in header:
        return label_studio.read_export(text, path, names)
    raise ProjectError(f"{path}: expected a CSV with header 'path,label', or a Label Studio "
                       f"CSV/TSV export with an {data_key!r} column; got "
                       f"{','.join(header) or 'an empty file'}")


def _read_path_label(text: str, path: Path) -> list:
    rows = []
    for number, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
        p, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not p or not label:
            raise ProjectError(f"{path}: line {number} needs both a path and a label")
        rows.append((p, label))
    return rows


def read_names(label_config: os.PathLike | None):
    """The LabelingNames of a labeling config file, or None."""
    if label_config is None:
        return None
    config = Path(label_config)
    if not config.is_file():
        raise ProjectError(f"--label-config {config}: no such file")
    return label_studio_config.parse(config.read_text(encoding="utf-8-sig"),
                                     f"--label-config {config}")


# -- import ----------------------------------------------------------------------------------

@dataclasses.dataclass
class ImportReport:
    """What an import did: new answers, rows already saved, rows left out and why."""

    rows: int             # labeled rows in the file
    added: int            # new answers written to the labels log
    already: int          # rows whose answer was already saved
    unmapped: list        # [(reference, reason)], skipped
    by_upload_name: list  # [(reference, path)]


def import_labels(project, path: os.PathLike, *, document_root: str | os.PathLike = "/",
                  label_config: os.PathLike | None = None,
                  skip_unmapped: bool = False) -> ImportReport:
    """Add the labels of a file to `project` (see the module docstring); all or nothing."""
    path = Path(path)
    names = read_names(label_config)
    rows = read_labels_file(path, names=names)
    if not rows:
        raise ProjectError(f"{path}: no labeled rows; nothing to import")
    index = PathIndex(project.paths, project.classes, project.images_root, document_root)
    resolution = resolve(index, rows)
    unmapped = resolution.unmapped
    if unmapped and not skip_unmapped:
        raise ProjectError(f"{len(unmapped)} of {len(rows)} labeled rows name no image of this "
                           f"project: {describe_unmapped(unmapped)}; nothing was imported "
                           "(--skip-unmapped imports the other rows)")
    if not resolution.labels:
        raise ProjectError(f"none of the {len(rows)} labeled rows names an image of this project: "
                           f"{describe_unmapped(unmapped)}; nothing was imported")
    answers = project.answers()
    clashes = [(i, c) for i, c in resolution.labels.items() if i in answers and answers[i] != c]
    if clashes:
        i, c = clashes[0]
        saved = "skipped (unsure)" if answers[i] is None else f"labeled {answers[i]!r}"
        raise ProjectError(f"{len(clashes)} rows of {path.name} contradict answers already saved, "
                           f"e.g. {project.paths[i]!r} is {saved} in this project and {c!r} in the "
                           "file; nothing was imported (the saved answer stands until it is undone)")
    offered = list(names.choices) if names is not None else []
    if not project.classes and len(offered) >= 2 and set(resolution.labels.values()) <= set(offered):
        project.set_classes(offered)   # the Label Studio project's classes, not only those used
    added = project.add_labels(resolution.labels, source=f"import:{path.name}", queued_only=False)
    return ImportReport(rows=len(rows), added=added, already=len(resolution.labels) - added,
                        unmapped=unmapped, by_upload_name=resolution.by_upload_name)


# -- export ----------------------------------------------------------------------------------

def config_path_for(out: Path) -> Path:
    """Where the labeling config of a Label Studio export is written: beside it."""
    return out.with_name(out.stem + ".label_config.xml")


def check_new_file(out: Path, project_dir: Path, flag: str) -> None:
    """`out` must be a new file (not even a dangling symbolic link), in an existing folder
    outside the project directory."""
    if out.exists() or out.is_symlink():
        link = " (a symbolic link)" if out.is_symlink() else ""
        raise ProjectError(f"{flag} {out}: already exists{link}; choose a new file")
    if not out.parent.is_dir():
        raise ProjectError(f"{flag} {out}: the folder {out.parent} does not exist")
    if Path(os.path.realpath(out.parent)).is_relative_to(os.path.realpath(project_dir)):
        raise ProjectError(f"{flag} {out}: inside the project directory {project_dir}, whose "
                           "files crc-jax writes; choose a file outside it")


def export(project, out: Path, fmt: str, *, document_root: str | os.PathLike = "/",
           label_config: os.PathLike | None = None, ground_truth: bool = False) -> dict:
    """Write `out` (a new file); for label-studio also its labeling config (unless given).

    Returns what was written: {"labels": n} for csv; label_studio.image_tasks's summary
    plus "config" (the config file written, or None) for label-studio.
    """
    if fmt not in FORMATS:
        raise ProjectError(f"--format: unknown {fmt!r}; allowed: {', '.join(FORMATS)}")
    check_new_file(out, project.dir, "--out")
    if fmt == "csv":
        labels = project.labels()
        ids = sorted(labels)
        durable.write_csv(out, ["path", "label"], [[project.paths[i], labels[i]] for i in ids])
        return {"labels": len(ids)}
    import json

    names = read_names(label_config)
    config_out = None
    if names is None:
        config_out = config_path_for(out)
        if config_out.exists() or config_out.is_symlink():
            raise ProjectError(f"{config_out}: already exists (the labeling config is written "
                               "beside --out); choose a new --out, or give --label-config")
        names = label_studio_config.DEFAULT_NAMES
        config_text = label_studio_config.config_xml(project.classes, names)
    else:
        label_studio_config.check_classes(names, project.classes, f"--label-config {label_config}")
    tasks, summary = label_studio.image_tasks(project, names, Path(document_root),
                                              ground_truth=ground_truth)
    durable.write_atomic(out, (json.dumps(tasks, indent=1) + "\n").encode())
    if config_out is not None:
        durable.write_atomic(config_out, config_text.encode())
    return {**summary, "config": config_out}
