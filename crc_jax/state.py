"""The train state: everything that changes during training, in one pytree.

Parameters, optimizer state, BatchNorm statistics and an exponential moving average
(EMA) of the parameters. FixMatch evaluates with the EMA; Mean Teacher's teacher is the EMA.

The EMA model's BatchNorm statistics follow `ema_batch_stats_rule` (paper footnote 2:
the two kekmodel/FixMatch-pytorch versions the paper used differ here):
  "average": averaged like the parameters (the early version, whose ModelEMA averaged
             every state_dict entry; used for the paper's §4.3.2);
  "copy":    copied from the trained model after every step (the later version, which
             averages parameters and copies buffers; used for §4.3.1).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state


class TrainState(train_state.TrainState):
    batch_stats: Any
    ema_params: Any
    ema_batch_stats: Any
    ema_decay: float = struct.field(pytree_node=False, default=0.0)
    ema_batch_stats_rule: str = struct.field(pytree_node=False, default="average")
    ema_warmup: bool = struct.field(pytree_node=False, default=False)

    def update_ema(self) -> TrainState:
        """ema <- d * ema + (1 - d) * current for params; batch statistics averaged the
        same way ("average") or copied ("copy"). With ema_warmup, d = min(1 - 1/(k + 1), decay)
        after step k (the Mean Teacher reference's moving_average), so early EMAs follow
        the trained weights closely."""
        d: Any = self.ema_decay
        if self.ema_warmup:
            d = jnp.minimum(1.0 - 1.0 / (self.step + 1.0), d)
        mix = lambda e, p: d * e + (1.0 - d) * p  # noqa: E731
        if self.ema_batch_stats_rule == "copy":
            stats = jax.tree_util.tree_map(jnp.copy, self.batch_stats)
        else:
            stats = jax.tree_util.tree_map(mix, self.ema_batch_stats, self.batch_stats)
        return self.replace(
            ema_params=jax.tree_util.tree_map(mix, self.ema_params, self.params),
            ema_batch_stats=stats,
        )

    def variables(self, *, ema: bool = False) -> dict:
        """Flax variables for `model.apply`: the EMA copy or the current one."""
        if ema:
            return {"params": self.ema_params, "batch_stats": self.ema_batch_stats}
        return {"params": self.params, "batch_stats": self.batch_stats}


EMA_BATCH_STATS_RULES = ("average", "copy")


def create_train_state(model, key: jax.Array, sample_x, tx: optax.GradientTransformation,
                       *, ema_decay: float = 0.0,
                       ema_batch_stats_rule: str = "average",
                       ema_warmup: bool = False) -> TrainState:
    """Initialize `model` on `sample_x` (a batch of one or more inputs) and wrap it."""
    variables = model.init(key, jnp.asarray(sample_x), train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=tx,
        batch_stats=batch_stats,
        ema_params=params,
        ema_batch_stats=batch_stats,
        ema_decay=float(ema_decay),
        ema_batch_stats_rule=ema_batch_stats_rule,
        ema_warmup=bool(ema_warmup),
    )
