"""One labeling round: train on what is labeled plus the unlabeled pool, pick the next batch.

The library does the work: a model from crc_jax.models, an SSL algorithm from
crc_jax.ssl, crc_jax.train.fit, and a strategy from crc_jax.acquisition through its
`Context`. Cold start (fewer labels than classes): nothing is trained, and the
first batch is picked by a cold-start strategy (registered with `cold_start=True`): CRC
on a randomly initialized model (the paper's Appendix B.2 setting), TypiClust, or at
random. Randomness is folded from (seed, round), so a round rerun after a crash picks the
same batch.

The pool is images (N, S, S, 3) uint8, or feature vectors (N, d) from a pretrained
backbone (crc_jax.project.features). Over vectors the model is a head (a model
registered with `vectors=True`: linear or MLP), the SSL algorithm one that needs no image
augmentation (Π-model, Mean Teacher: feature noise and dropout; supervised), and the
vectors stay memory-mapped: training gathers its batches from the map (the unlabeled
stream is the whole pool, labeled rows included, as in the reference FixMatch and Mean
Teacher code), prediction and the strategies read it in batches. CRC's last-layer NTK is
then the head's: over a linear head, C·(xxᵀ + 1) on the features themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from typing import Any

import jax
import numpy as np

from crc_jax import acquisition, models, ssl
from crc_jax.runtime import faults
from crc_jax.project.settings import RoundPlan, RoundSettings, training_config
from crc_jax.train import fit

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RoundResult:
    """picked: pool ids to label next; variables: the model (None at a random cold start);
    probs: (N, C) class probabilities of the trained model, or None when nothing was trained;
    record: what the strategy left in its Context's record (CRC's scores and diagnostics)."""

    picked: np.ndarray
    variables: Any
    probs: np.ndarray | None
    cold_start: bool
    strategy: str
    record: dict = dataclasses.field(default_factory=dict)


def round_key(seed: int, round_index: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), round_index)


def images_as_float(pool_uint8: np.ndarray) -> np.ndarray:
    return np.asarray(pool_uint8, dtype=np.float32) / 255.0


def holds_vectors(pool: np.ndarray) -> bool:
    """Whether a stored pool is feature vectors (N, d) rather than images (N, S, S, 3)."""
    return pool.ndim == 2


def model_inputs(pool: np.ndarray) -> np.ndarray:
    """What the model reads: images as float32 in [0, 1] (in memory), or the feature
    vectors as stored (the memory map itself: rows are read where they are used)."""
    return pool if holds_vectors(pool) else images_as_float(pool)


def batch_size_for(pool: np.ndarray) -> int:
    """Rows per prediction/feature batch: a vector costs a dot product, an image a network."""
    return 4096 if holds_vectors(pool) else 256


def model_options(settings: RoundSettings) -> dict:
    """The settings the model's factory takes: width (0: the model's own, as model.width
    reads), dropout, and no BatchNorm (rounds are a few hundred steps, too few for running
    statistics (momentum 0.99) to settle, and evaluation mode would use them)."""
    models.names()  # registers every model
    wanted = {"width": settings.width, "dropout": settings.dropout, "batch_norm": False}
    if not settings.width:
        del wanted["width"]
    taken = inspect.signature(models.MODELS.factory(settings.model)).parameters
    return {k: v for k, v in wanted.items() if k in taken}


class Trainer:
    """The model, its SSL algorithm and jitted apply functions for one set of settings.

    Built once per (settings, classes, algorithm) and cached, so later rounds in the same
    process (the labeling page, the Python API) reuse the compiled train and eval steps.
    """

    def __init__(self, settings: RoundSettings, num_classes: int, ssl_name: str):
        self.settings = settings
        self.model = models.get(settings.model, num_classes=max(num_classes, 2),
                                **model_options(settings))
        self.config = training_config(settings, ssl_name)
        self.algorithm = ssl.create(self.config, self.model,
                                    num_train_steps=settings.epochs * settings.steps_per_epoch,
                                    flip=settings.flip)
        self.eval_apply = models.apply_functions(self.model).logits
        self._probs = jax.jit(lambda v, xb: jax.nn.softmax(self.eval_apply(v, xb), -1))

    def fit(self, x: np.ndarray, labeled: np.ndarray, labels: np.ndarray,
            x_unlabeled: np.ndarray, key) -> Any:
        """Fit from scratch for settings.epochs epochs; the final evaluation variables.
        x_unlabeled: the rows the unlabeled batches are drawn from (an array or a memory map)."""
        x_l, y_l = x[labeled], labels.astype(np.int32)
        result = fit(self.algorithm, x_labeled=x_l, y_labeled=y_l, x_unlabeled=x_unlabeled,
                     watch=(x_l, y_l), test=(x_l, y_l), train_config=self.config.train,
                     key=key, eval_apply=self.eval_apply, desc=f"train n={len(labeled)}",
                     before_step=faults.hook("train_step"))
        # No held-out split to pick a best epoch on: use the model where training ended.
        assert result.state is not None   # a fit just ran (only journal reads lack a state)
        return self.algorithm.eval_variables(result.state)

    def init_variables(self, x: np.ndarray, key) -> Any:
        return self.model.init(key, x[:1], train=False)

    def probs(self, variables, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Softmax class probabilities of every image (the last batch padded: one compile)."""
        out = []
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            pad = batch_size - len(xb)
            if pad:
                xb = np.concatenate([xb, np.repeat(xb[:1], pad, axis=0)])
            out.append(np.asarray(self._probs(variables, xb))[:batch_size - pad])
        return np.concatenate(out)


def trainer(settings: RoundSettings, num_classes: int, ssl_name: str) -> Trainer:
    """The cached Trainer; fields that do not change training (seed, strategies) are ignored."""
    return _cached_trainer(dataclasses.replace(settings, seed=0, strategy="", cold_start=""),
                           num_classes, ssl_name)


@functools.lru_cache(maxsize=8)
def _cached_trainer(settings: RoundSettings, num_classes: int, ssl_name: str) -> Trainer:
    return Trainer(settings, num_classes, ssl_name)


def is_cold(labels: np.ndarray, num_classes: int) -> bool:
    """Cold start: no classes yet, or fewer labels than classes. A class still without
    labels after that does not keep the project cold: the model trains on the others
    (its output for that class stays available), so later rounds use what was learned."""
    return num_classes < 1 or len(labels) < num_classes


def run_round(plan: RoundPlan, *, pool: np.ndarray, labeled: np.ndarray, labels: np.ndarray,
              candidates: np.ndarray, num_classes: int, round_index: int) -> RoundResult:
    """Train (unless cold) and pick `plan.budget` ids among `candidates`.

    plan: the round checked where it entered (crc_jax.project.settings.plan), for this kind
    of pool; pool: (N, S, S, 3) uint8 images or (N, d) feature vectors (see the module
    docstring); labeled / labels: ids and class indices; candidates: the unlabeled ids a
    strategy may pick (skipped images already removed).
    """
    settings, budget = plan.settings, plan.budget
    assert plan.vectors == holds_vectors(pool), "a plan checked for another kind of pool"
    if budget > len(candidates):
        raise ValueError(f"budget {budget} exceeds the {len(candidates)} images left to label")
    cold = is_cold(labels, num_classes)
    strategy = plan.cold_start if cold else plan.strategy
    x = model_inputs(pool)
    batch = batch_size_for(pool)
    key = round_key(settings.seed, round_index)
    train_key, init_key, pick_key = jax.random.split(key, 3)
    unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
    # the batch the checked config trains with (moved to split over the devices, if need be)
    trained = dataclasses.replace(settings, batch_size=plan.config.train.batch_size)
    t = trainer(trained, num_classes, settings.ssl if len(unlabeled) else "supervised")
    probs = None
    if cold:
        variables = t.init_variables(x, init_key)
        log.info("cold start (%d labels, %d classes): %s on a randomly initialized model",
                 len(labeled), num_classes, strategy.spec)
    else:
        x_unlabeled = x if holds_vectors(pool) else x[unlabeled]
        variables = t.fit(x, labeled, labels, x_unlabeled, train_key)
        probs = t.probs(variables, x, batch_size=batch)
    ctx = acquisition.model_context(t.model, variables, x=x, labeled=labeled,
                                    unlabeled=candidates, num_classes=max(num_classes, 2),
                                    batch_size=batch)
    picked = acquisition.select(strategy, ctx, budget, pick_key)
    return RoundResult(picked=picked, variables=None if cold else variables, probs=probs,
                       cold_start=cold, strategy=strategy.spec, record=ctx.record)
