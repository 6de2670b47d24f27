"""`--features FILE`: one vector per image, read from a file the user's own script wrote.

Two formats, the ones a CLIP / DINOv2 / timm script writes with NumPy alone:

    .npz   np.savez(FILE, paths=np.array(paths, dtype=str), features=matrix)   # (N,), (N, d)
    .csv   header `path,<any names>`: the path, then the d values of its vector

(Parquet needs pyarrow, about 170 MB installed, for what one np.savez line does: it is
not read; docs/labeling.md shows the conversion.) A path is the image's path relative
to the --images folder, or an absolute path, or one relative to the current directory,
inside that folder; Windows separators are accepted.

Every image the folder holds (crc_jax.project.scan.list_images) must have exactly one
vector and every vector an image; a missing, extra or repeated path, a value that is
NaN or infinite, a vector of another length, a value that is not a number: each is
refused with one line naming the path (ProjectError), and so is a file without vectors
or with vectors of length 0, and a folder without images. An image whose file name is
not valid UTF-8 is skipped and listed, as `init` without features does (a vector naming
it is left out with it). The images are not opened (the vectors were computed from them
already): the sha256 column of index.csv stays empty and exact duplicate files stay in
the pool, each with its own vector.
"""

from __future__ import annotations

import csv
import os
import posixpath
import zipfile
from pathlib import Path

import numpy as np

from crc_jax.project.features import FeatureResult
from crc_jax.project.scan import NOT_UTF8, list_images, printable
from crc_jax.project.store import ProjectError

FORMATS = (".npz", ".csv")


class EmbeddingsFile:
    """A features file, read and matched to the folder's images by `check`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._result: FeatureResult | None = None

    def check(self, images: Path) -> None:
        paths, vectors = read(self.path)
        self._result = match(self.path, paths, vectors, Path(images))

    def compute(self, images: Path, workdir: Path, *, progress: bool) -> FeatureResult:
        del workdir, progress  # nothing to compute: the file holds the vectors
        if self._result is None:
            self.check(images)
        assert self._result is not None
        return self._result


def read(path: Path) -> tuple[list, np.ndarray]:
    """(paths as written, (N, d) float32 vectors) of a features file; ProjectError otherwise."""
    if not path.is_file():
        raise ProjectError(f"--features {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path)
    if suffix == ".csv":
        return read_csv(path)
    hint = " (Parquet is not read: it needs pyarrow; see docs/labeling.md)" if suffix == ".parquet" else ""
    raise ProjectError(f"--features {path}: a {suffix or 'suffix-less'} file; expected "
                       f"{' or '.join(FORMATS)}{hint}")


def read_npz(path: Path) -> tuple[list, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ProjectError(f"--features {path}: not a NumPy .npz file ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):   # np.load read one .npy array
        raise ProjectError(f"--features {path}: holds one NumPy array (.npy data), not an .npz "
                           "archive; write it with np.savez(FILE, paths=paths, features=vectors)")
    with archive:
        missing = [k for k in ("paths", "features") if k not in archive.files]
        if missing:
            raise ProjectError(f"--features {path}: holds {', '.join(archive.files) or 'nothing'}; "
                               f"expected arrays 'paths' and 'features' (missing {', '.join(missing)})")
        try:
            paths, vectors = archive["paths"], archive["features"]
        except ValueError:  # an object array: pickled (ragged vectors, or paths as objects)
            raise ProjectError(f"--features {path}: holds a pickled object array; save 'paths' "
                               "with dtype=str and 'features' as one (N, d) number array "
                               "(vectors of different lengths cannot be one)") from None
    if paths.ndim != 1 or paths.dtype.kind not in "US":
        raise ProjectError(f"--features {path}: 'paths' must be a 1-D string array, got "
                           f"{paths.dtype} of shape {paths.shape}")
    if vectors.ndim != 2 or vectors.dtype.kind not in "fiu":
        raise ProjectError(f"--features {path}: 'features' must be an (N, d) number array, got "
                           f"{vectors.dtype} of shape {vectors.shape}")
    if len(paths) != len(vectors):
        raise ProjectError(f"--features {path}: {len(paths)} paths but {len(vectors)} vectors")
    check_shape(path, vectors)
    texts = [p.decode() if isinstance(p, bytes) else str(p) for p in paths.tolist()]
    return texts, vectors.astype(np.float32)


def check_shape(path: Path, vectors: np.ndarray) -> None:
    """At least one vector, each of at least one value."""
    if vectors.shape[0] == 0:
        raise ProjectError(f"--features {path}: holds no vectors (0 rows); write one vector "
                           "per image of the --images folder")
    if vectors.shape[1] == 0:
        raise ProjectError(f"--features {path}: its vectors have 0 values (shape "
                           f"{vectors.shape}); write one (N, d) array with d >= 1")


def read_csv(path: Path) -> tuple[list, np.ndarray]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            return _read_csv_rows(path, reader)
        except csv.Error as err:   # a field over csv's size limit, a NUL byte
            raise ProjectError(f"--features {path} line {reader.line_num}: not a features CSV "
                               f"row ({err}); expected path,<value>,<value>,... with one "
                               "number per field") from None


def _read_csv_rows(path: Path, reader) -> tuple[list, np.ndarray]:
    header = next(reader, None)
    if not header or header[0].strip() != "path" or len(header) < 2:
        raise ProjectError(f"--features {path}: expected a header 'path,<one name per "
                           f"value>', got {','.join(header or []) or 'an empty file'}")
    d = len(header) - 1
    paths, rows = [], []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        where = f"--features {path} line {line} ({row[0]!r})"
        if len(row) - 1 != d:
            raise ProjectError(f"{where}: {len(row) - 1} values, expected {d} as in the header")
        try:
            rows.append(np.asarray(row[1:], dtype=np.float32))
        except ValueError:
            bad = next(v for v in row[1:] if not _is_number(v))
            raise ProjectError(f"{where}: {bad!r} is not a number") from None
        paths.append(row[0])
    if not rows:
        raise ProjectError(f"--features {path}: no vectors after the header")
    return paths, np.stack(rows)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def relative_path(written: str, root: Path, listed: set) -> str:
    """The image path (relative to `root`, POSIX) a written path names: as is, with Windows
    separators, absolute, or relative to the current directory; unchanged when none fits."""
    if written in listed:
        return written
    text = written.replace("\\", "/")
    normal = posixpath.normpath(text)
    if normal in listed:
        return normal
    full = normal if os.path.isabs(normal) else os.path.abspath(normal)
    rel = os.path.relpath(full, os.path.abspath(root)).replace(os.sep, "/")
    return rel if rel in listed else written


def match(source: Path, written: list, vectors: np.ndarray, root: Path) -> FeatureResult:
    """The vectors in the folder's image order, every image with exactly one; ProjectError
    naming the first path that breaks a rule (see the module docstring)."""
    if not root.is_dir():
        raise ProjectError(f"--images {root}: not a folder")
    every = list_images(root)
    listed = set(every)
    untext = {p for p in every if printable(p) != p}   # skipped: not valid UTF-8
    listed_paths = [p for p in every if p not in untext]
    if not listed_paths:
        skipped = f" ({len(untext)} skipped: file names not valid UTF-8)" if untext else ""
        raise ProjectError(f"--images {root}: no images found{skipped}")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ProjectError(f"--features {source}: the vector of {written[row]!r} holds NaN or "
                           f"infinite values ({int((~finite).sum())} such vectors)")
    row_of: dict[str, int] = {}
    extra = []
    for row, text in enumerate(written):
        rel = relative_path(text, root, listed)
        if rel not in listed:
            extra.append(text)
        elif rel in untext:
            continue
        elif rel in row_of:
            raise ProjectError(f"--features {source}: {text!r} has two vectors (rows "
                               f"{row_of[rel] + 1} and {row + 1})")
        else:
            row_of[rel] = row
    if extra:
        raise ProjectError(f"--features {source}: {extra[0]!r} is not an image of {root} "
                           f"({len(extra)} such paths; paths are relative to the --images folder)")
    missing = [p for p in listed_paths if p not in row_of]
    if missing:
        raise ProjectError(f"--features {source}: no vector for {missing[0]!r} ({len(missing)} "
                           f"of the {len(listed_paths)} images of {root} have none)")
    order = np.fromiter((row_of[p] for p in listed_paths), np.int64, len(listed_paths))
    return FeatureResult(paths=listed_paths, hashes=[""] * len(listed_paths),
                         features=np.ascontiguousarray(vectors[order]), duplicates=[],
                         skipped=[(printable(p), NOT_UTF8) for p in sorted(untext)],
                         source={"kind": "file", "file": str(source.resolve()),
                                 "format": source.suffix.lower().lstrip(".")})
