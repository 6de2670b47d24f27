"""Models by name. Every model is a Flax linen module with the same contract:

    logits = model.apply(variables, x, train=False)
    logits, features = model.apply(variables, x, train=False, return_features=True)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])

The final dense layer that produces the logits is named "head" (the last-layer NTK
differentiates exactly its parameters); `features` is its input (N, d).
"""

from crc_jax.registry import Registry

MODELS = Registry("model")


def get(name: str, *, num_classes: int, **options):
    """Build the model registered under `name` for `num_classes` outputs."""
    _import_all()
    return MODELS.get(name, num_classes=num_classes, **options)


def names() -> list[str]:
    _import_all()
    return MODELS.names()


def _import_all():
    from crc_jax.models import cnn, mlp, wrn  # noqa: F401  (registration side effects)
