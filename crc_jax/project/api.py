"""The practitioner's loop as a Python API: a project directory, its labels, its rounds.

    project = Project.create("proj", images="photos/", classes=["cat", "dog"])
    ids = project.next_batch(50)                 # trains, picks, writes queue.csv; labels nothing
    project.add_labels({ids[0]: "cat", ...})     # appended to the labels log, fsynced
    project.status(); project.predict()

The CLI (crc_jax.project.cli) and the labeling page (crc_jax.project.server) are thin layers
over this class.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from crc_jax import durable
from crc_jax.runtime import faults
from crc_jax.project import labels_log, settings as round_options, store
from crc_jax.project.features import FeatureResult, FeatureSource
from crc_jax.project.scan import ScanResult, scan
from crc_jax.project.settings import RoundPlan, RoundSettings
from crc_jax.project.store import ProjectError

log = logging.getLogger(__name__)

QUEUE_FIELDS = ["id", "path", "predicted", "confidence"]


class Project:
    """A labeling project directory (see crc_jax.project.store for its files)."""

    def __init__(self, directory: os.PathLike):
        self.dir = Path(directory)
        self.meta = store.read_meta(self.dir)
        self.paths, self.hashes = store.read_index(self.dir)
        store.load_pool(self.dir, len(self.paths))   # cut or replaced: refused at once
        self.log = labels_log.LabelsLog(self.dir / "labels.jsonl")
        self.rounds_journal = durable.Journal(self.dir / "rounds.jsonl")
        self._check_classes()

    def _check_classes(self) -> None:
        """project.json's classes must still be those the labels and the trained rounds
        use (an edit there would silently relabel every answer)."""
        where = self.dir / store.PROJECT_FILE
        classes = self.meta.get("classes")
        if not isinstance(classes, list):
            raise ProjectError(f"{where}: \"classes\" must be a list of names")
        if classes:
            try:
                store.check_class_names(classes)
            except ProjectError as err:
                raise ProjectError(f"{where}: {err}") from None
        used: dict = {}
        for entry in self.rounds_journal.entries():
            for name in entry.get("classes") or []:
                used.setdefault(name, f"round {entry['step']}")
        for name in self.log.labels().values():
            used.setdefault(name, "labels.jsonl")
        gone = [name for name in used if name not in classes]
        if gone:
            raise ProjectError(f"{where}: its classes no longer include {gone[0]!r}, which "
                               f"{used[gone[0]]} uses; put the class list back as it was "
                               "(classes cannot change once labels exist)")
        for entry in self.rounds_journal.entries():
            if entry.get("classes") and entry["classes"] != classes:
                raise ProjectError(f"{where}: its classes ({', '.join(classes)}) are not those "
                                   f"round {entry['step']} was trained with "
                                   f"({', '.join(entry['classes'])}); put the list back as it was")

    # -- creating and opening ------------------------------------------------------------
    @classmethod
    def create(cls, directory: os.PathLike, images: os.PathLike, *, image_size: int = 32,
               classes: list | None = None, labels_csv: os.PathLike | None = None,
               progress: bool = True, features: FeatureSource | None = None,
               feature_dtype: str = "float32") -> tuple[Project, ScanResult | FeatureResult]:
        """Scan `images`, store the pool in `directory`; optional classes and a labels CSV.

        features: a source of one vector per image (crc_jax.project.features:
        `embeddings_file(FILE)` or `backbone(FILE, ...)`); the pool is then those vectors,
        stored as `feature_dtype`, and rounds train a head over them. Without it the pool
        is the images at `image_size`.
        """
        from crc_jax.project import features as feature_sources

        directory, images = Path(directory), Path(images)
        if not images.is_dir():
            raise ProjectError(f"--images {images}: not a folder")
        if not 8 <= int(image_size) <= 512:
            raise ProjectError(f"--image-size: must be between 8 and 512, got {image_size}")
        if features is not None:
            feature_sources.check_store_dtype(feature_dtype)
        try:
            classes = store.check_class_names(classes) if classes else []
        except ProjectError as err:
            raise ProjectError(f"--classes: {err}") from None
        store.check_new_dir(directory)   # before the scan: a project, or someone's folder
        labels_rows = None
        if labels_csv is not None:
            from crc_jax.project import exchange
            labels_rows = exchange.read_labels_file(Path(labels_csv))
        if features is None:
            scanned = scan(images, int(image_size), progress=progress)
            if not scanned.paths:
                raise ProjectError(f"--images {images}: no readable images found "
                                   f"({len(scanned.skipped)} unreadable)")
            if labels_rows is not None:  # checked before anything is written
                classes = cls._check_labels(scanned.paths, classes, labels_rows, images)
        else:   # a features file is read and matched here; a backbone is loaded already
            features.check(images)
        made_dir = not directory.exists()
        store.prepare_dir(directory)
        meta = {"format": store.FORMAT_VERSION, "images": str(images.resolve()),
                "classes": classes, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        result: ScanResult | FeatureResult
        try:
            if features is None:
                store.write_pool(directory, scanned.images, scanned.paths, scanned.hashes)
                meta.update(kind="images", input="images", image_size=int(image_size))
                result = scanned
            else:
                computed = features.compute(images, directory, progress=progress)
                if labels_rows is not None:
                    classes = meta["classes"] = cls._check_labels(computed.paths, classes, labels_rows,
                                                                  images)
                # The page shows a file only while its bytes are those its vector stands for:
                # a source that did not read the files (a features file) has them hashed here.
                hashes = store.fill_sha256(images, computed.paths, computed.hashes)
                scale = store.write_features(directory, computed.features, computed.paths,
                                             hashes, dtype=feature_dtype)
                meta.update(input="features", features={
                    "dim": int(computed.features.shape[1]), "dtype": feature_dtype, "scale": scale,
                    "source": computed.source})
                meta["kind"] = store.kind_of(meta)
                result = computed
            store.finish_init(directory, meta)
        except BaseException as err:   # a full disk, Ctrl-C: no half-made project stays behind
            store.undo_init(directory, made_dir=made_dir,
                            keep_chunks=not isinstance(err, ProjectError))
            raise
        if features is not None:
            from crc_jax.project.features import chunks
            chunks.cleanup(directory)   # the pool holds the features now
        project = cls(directory)
        if labels_rows is not None:
            project.import_rows(labels_rows, source=f"init:{Path(str(labels_csv)).name}")
        return project, result

    @staticmethod
    def _check_labels(paths: list, classes: list | None, rows: list, images: Path) -> list:
        """The classes (named by the rows when not given), once every row names an image
        (absolute paths resolved against the `images` folder)."""
        from crc_jax.project import exchange

        if not classes:
            try:
                classes = store.check_class_names(sorted({label for _, label in rows}))
            except ProjectError as err:
                raise ProjectError(f"--labels: {err}; give --classes") from None
        exchange.resolve_rows(exchange.PathIndex(paths, classes, images), rows)
        return classes

    @classmethod
    def open(cls, directory: os.PathLike) -> Project:
        return cls(directory)

    # -- what is stored ------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def images_root(self) -> Path:
        return Path(self.meta["images"])

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def input_kind(self) -> str:
        """"images" (the pool is pixels) or "features" (one vector per image)."""
        return str(self.meta["input"])

    @property
    def kind(self) -> str:
        """"images" (pixels), "features" (vectors from a file) or "backbone" (vectors
        computed at init): what `next`'s defaults follow (settings.KIND_DEFAULTS)."""
        return str(self.meta["kind"])

    @property
    def holds_vectors(self) -> bool:
        return self.input_kind == "features"

    # -- round options -------------------------------------------------------------------
    def kept_options(self) -> dict:
        """Round options given to earlier commands, kept for later rounds ({field: value})."""
        where = self.dir / store.OPTIONS_FILE
        try:
            kept = round_options.check_options(store.read_options(self.dir))
            round_options.check(round_options.for_kind(self.kind, kept),
                                vectors=self.holds_vectors)
        except ValueError as err:
            raise ProjectError(f"{where}: {err}; fix it or delete it (the defaults of a "
                               f"{self.kind} project apply then)") from None
        return kept

    def round_settings(self, given: dict | None = None) -> RoundSettings:
        """The settings of the next round: the defaults of the project's kind, then the
        kept options, then `given` ({field: value}, e.g. a command's options). ValueError
        naming the field ("ssl: ...") for a given value a round here cannot use."""
        kept = self.kept_options()
        chosen = round_options.check_options(dict(given or {}))
        settings = round_options.for_kind(self.kind, {**kept, **chosen})
        round_options.check(settings, vectors=self.holds_vectors)
        return settings

    def budget(self, given: int | None = None, default: int | None = None) -> int | None:
        """Images per round: `given`, else the kept one, else `default`."""
        return given if given is not None else self.kept_options().get("budget", default)

    def keep_options(self, given: dict) -> dict:
        """Keep `given` ({field: value}, checked) for later rounds, over what was kept;
        returns every kept option. options.json is written only when something changed."""
        kept = self.kept_options()
        merged = {**kept, **round_options.check_options(dict(given))}
        if merged != kept:
            store.write_options(self.dir, merged)
        return merged

    def pool(self) -> np.ndarray:
        """The stored pool, memory-mapped: (N, S, S, 3) uint8 images or (N, d) vectors."""
        return store.load_pool(self.dir, len(self))

    def set_classes(self, names: list) -> None:
        """Name the classes once (the first labels given); later changes are refused."""
        names = store.check_class_names(names)
        if self.classes and names != self.classes:
            raise ProjectError(f"the project's classes are already {', '.join(self.classes)}")
        self.meta["classes"] = names
        store.write_meta(self.dir, self.meta)

    # -- labels --------------------------------------------------------------------------
    def answers(self) -> dict:
        """{id: class name, or None when skipped}."""
        return self.log.answers()

    def labels(self) -> dict:
        """{id: class name} of every labeled image."""
        return self.log.labels()

    def _check_ids(self, ids) -> None:
        bad = [i for i in ids if not (isinstance(i, (int, np.integer)) and 0 <= i < len(self))]
        if bad:
            raise ProjectError(f"unknown image ids: {', '.join(map(str, bad[:5]))}"
                               f"{' ...' if len(bad) > 5 else ''} (ids run 0..{len(self) - 1})")

    def _check_queued(self, ids) -> None:
        queued = set(self.queue_ids())
        outside = [i for i in ids if i not in queued]
        if outside:
            raise ProjectError(f"image {outside[0]} ({self.paths[outside[0]]}) is not in the "
                               "queue; only queued images take answers here (use import)")

    def add_labels(self, labels: dict, *, source: str = "api", queued_only: bool = True) -> int:
        """Save {id: class name} (checked as a whole, then appended); returns how many were new.

        Unknown ids or classes, an id outside the queue (unless queued_only=False) and an
        answer that contradicts a saved one are refused before anything is written.
        """
        ids = list(labels)
        self._check_ids(ids)
        unknown = sorted({str(c) for c in labels.values()} - set(self.classes))
        if unknown and self.classes:
            raise ProjectError(f"unknown class {unknown[0]!r}; the classes are "
                               f"{', '.join(self.classes)}")
        if queued_only:
            self._check_queued(ids)
        if unknown:  # the first labels given name the classes
            if len(unknown) < 2:
                raise ProjectError(f"these labels name one class only ({unknown[0]!r}) and the "
                                   "project has none yet: a project needs at least 2; name them "
                                   "first (crc-jax init --classes a,b,..., or import with "
                                   "--label-config)")
            self.set_classes(unknown)
        events = [{"op": "label", "id": int(i), "label": str(c), "source": source}
                  for i, c in labels.items()]
        return len(self.log.record(events))

    def skip(self, image_id: int, *, source: str = "api") -> int:
        """Mark an image unsure: it leaves the queue and later rounds do not pick it."""
        self._check_ids([image_id])
        self._check_queued([image_id])
        return len(self.log.record([{"op": "skip", "id": int(image_id), "source": source}]))

    def undo(self, image_id: int, *, source: str = "api") -> int:
        """Forget the answer for an image (it returns to the queue if it was queued)."""
        self._check_ids([image_id])
        return len(self.log.record([{"op": "undo", "id": int(image_id), "source": source}]))

    def import_rows(self, rows: list, *, source: str) -> int:
        """Labels given as (path, class name) pairs, e.g. from a CSV or Label Studio."""
        from crc_jax.project import exchange
        index = exchange.PathIndex(self.paths, self.classes, self.images_root)
        return self.add_labels(exchange.resolve_rows(index, rows), source=source,
                               queued_only=False)

    def import_file(self, path: os.PathLike, **options) -> int:
        """Labels from a CSV or a Label Studio export (options: exchange.import_labels)."""
        from crc_jax.project import exchange
        return exchange.import_labels(self, path, **options).added

    # -- rounds --------------------------------------------------------------------------
    def rounds(self) -> list[dict]:
        """Completed rounds. Only reads: a torn last line (a crash mid-append, or an append
        in progress in another process) is ignored here and cut off by the next round."""
        return self.rounds_journal.entries()

    def queue(self) -> list[dict]:
        """The rows of queue.csv (id, path, predicted, confidence), in the order picked."""
        path = self.dir / "queue.csv"
        return durable.read_csv(path) if path.exists() else []

    def queue_ids(self) -> list[int]:
        return [int(r["id"]) for r in self.queue()]

    def pending(self) -> list[int]:
        """Queued ids without an answer yet, in queue order."""
        answered = self.answers()
        return [i for i in self.queue_ids() if i not in answered]

    def plan(self, n: int, settings: RoundSettings | None = None) -> RoundPlan:
        """The next round of `n` images, checked where it enters: `settings` (by default
        the project's, `round_settings()`) for this project's pool, and its two strategies
        built once (crc_jax.project.settings.plan). ValueError naming the round option."""
        settings = self.round_settings() if settings is None else settings
        return round_options.plan(settings, int(n), vectors=self.holds_vectors)

    def next_batch(self, n: int, settings: RoundSettings | None = None) -> list[int]:
        """Train on the labels so far plus the unlabeled pool, pick `n` ids, write queue.csv
        (`run_round(plan(n, settings))`)."""
        return self.run_round(self.plan(n, settings))

    def run_round(self, plan: RoundPlan) -> list[int]:
        """Run the round `plan` (`plan(n, settings)`): train, pick its budget of ids, write
        queue.csv. Labels nothing. One round runs at a time per project (another is
        refused). A crash anywhere leaves the labels untouched; rerunning redoes the round
        exactly."""
        from crc_jax.acquisition.crc import diagnostics
        from crc_jax.project import rounds

        settings = plan.settings
        with store.round_lock(self.dir):
            started = time.time()
            answers = self.answers()
            labels = {i: c for i, c in answers.items() if c is not None}
            labeled = np.array(sorted(labels), dtype=np.int64)
            y = np.array([self.classes.index(labels[i]) for i in labeled], dtype=np.int32)
            candidates = np.array([i for i in range(len(self)) if i not in answers], np.int64)
            index = len(self.rounds_journal.read())  # the one writer: cuts a torn line
            result = rounds.run_round(plan, pool=self.pool(), labeled=labeled, labels=y,
                                      candidates=candidates, num_classes=len(self.classes),
                                      round_index=index)
            faults.maybe_kill("project_save")
            model_file = self._save_model(index, result.variables)
            self._write_queue(result)
            entry = {"step": index, "cold_start": result.cold_start, "strategy": result.strategy,
                     "settings": dataclasses.asdict(settings), "classes": self.classes,
                     "num_labeled": int(len(labeled)),
                     "labeled_sha256": hashlib.sha256(labeled.tobytes()).hexdigest()[:16],
                     "queue": result.picked.tolist(), "model": model_file,
                     "predicted": self._predicted(result, result.picked),
                     "crc_diagnostics": diagnostics.summary(result.record),   # None: not CRC
                     "seconds": round(time.time() - started, 2)}
            self.rounds_journal.append(entry)
            return result.picked.tolist()

    def _predicted(self, result, ids) -> list | None:
        if result.probs is None:
            return None
        return [int(np.argmax(result.probs[i])) for i in ids]

    def _save_model(self, index: int, variables) -> str | None:
        if variables is None:
            return None
        from flax import serialization

        (self.dir / "models").mkdir(exist_ok=True)
        name = f"models/round_{index}.msgpack"
        durable.write_atomic(self.dir / name, serialization.to_bytes(variables))
        return name

    def _write_queue(self, result) -> None:
        rows = []
        for i in result.picked.tolist():
            if result.probs is None:
                rows.append([i, self.paths[i], "", ""])
            else:
                k = int(np.argmax(result.probs[i]))
                rows.append([i, self.paths[i], self.classes[k], f"{result.probs[i, k]:.4f}"])
        durable.write_atomic(self.dir / "queue.csv", durable.csv_bytes(QUEUE_FIELDS, rows))

    # -- the trained model -----------------------------------------------------------------
    def latest_model(self):
        """(rounds.Trainer, variables, rounds entry) of the last round that trained, or None."""
        from flax import serialization

        from crc_jax.project import rounds

        trained = [e for e in self.rounds() if e.get("model")]
        if not trained:
            return None
        entry = trained[-1]
        settings = RoundSettings(**entry["settings"])
        trainer = rounds.trainer(settings, len(entry["classes"]), "supervised")
        template = trainer.init_variables(rounds.model_inputs(self.pool()[:1]),
                                          rounds.round_key(0, 0))
        path = self.dir / entry["model"]
        if not path.is_file():
            raise ProjectError(f"{path}: missing (the model of round {entry['step']}); run "
                               "crc-jax next to train a new one")
        try:
            return trainer, serialization.from_bytes(template, path.read_bytes()), entry
        except (ValueError, TypeError, KeyError) as err:   # a cut or foreign file
            raise ProjectError(f"{path}: unreadable ({type(err).__name__}); run crc-jax next "
                               "to train a new one") from None

    def predict(self) -> list[dict]:
        """id, path, predicted class, confidence and the label (if any) of every image."""
        from crc_jax.project import rounds

        latest = self.latest_model()
        if latest is None:
            raise ProjectError(f"{self.dir}: no trained model yet; label the first batch and "
                               "run crc-jax next")
        trainer, variables, entry = latest
        pool = self.pool()
        probs = trainer.probs(variables, rounds.model_inputs(pool),
                              batch_size=rounds.batch_size_for(pool))
        labels = self.labels()
        classes = entry["classes"]
        return [{"id": i, "path": p, "predicted": classes[int(np.argmax(probs[i]))],
                 "confidence": f"{float(np.max(probs[i])):.4f}", "label": labels.get(i, "")}
                for i, p in enumerate(self.paths)]

    def status(self) -> dict:
        """report.status, plus the project's kind, the options kept for later rounds, the
        settings the next round uses and the Label Studio annotations serve-ml could not
        apply (their reasons are on the Label Studio tasks)."""
        from crc_jax.project import label_studio_sync, report

        st = report.status(self)
        st.update(kind=self.kind, kept_options=self.kept_options(),
                  settings=dataclasses.asdict(self.round_settings()),
                  label_studio_ignored=label_studio_sync.ignored_count(self.dir))
        return st
