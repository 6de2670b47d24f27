"""Pseudo-AL's per-class wrapper (paper Table 3): a strategy run once per class.

In the pseudo-AL setting every acquisition takes budget/C images of each class. A strategy
that builds class-balanced groups itself (CRC) does that on its own; any other is wrapped
here and run on each class's unlabeled images in turn, with a record of its own per class.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


def per_class(strategy):
    """`strategy` run once per class on that class's unlabeled images, budget/C each (the
    class read from ctx.oracle); each class's record is kept under record["per_class"][c]."""

    def class_balanced_strategy(ctx, budget, key):
        if ctx.oracle is None:
            raise ValueError("the pseudo-AL setting needs ctx.oracle to split the pool by class")
        per = budget // ctx.num_classes
        classes = ctx.oracle(ctx.unlabeled)
        picked, records = [], {}
        for c in range(ctx.num_classes):
            # a record of its own: dataclasses.replace would share ctx's dict
            sub = dataclasses.replace(ctx, unlabeled=ctx.unlabeled[classes == c], record={})
            picked.append(np.asarray(strategy(sub, per, jax.random.fold_in(key, c))))
            if sub.record:
                records[str(c)] = sub.record
        if records:
            ctx.record["per_class"] = records
        return np.concatenate(picked)

    return class_balanced_strategy
