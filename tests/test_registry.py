"""Registries: what a caller passes a factory is declared at registration, not inspected."""

import pytest

from crc_jax import acquisition, data, models, ssl
from crc_jax.registry import Registry
from crc_jax.config import validate
from experiments.configs.base import get_base_config


def test_traits_are_declared_at_registration():
    reg = Registry("thing")

    @reg.register("declared", group_size=True)
    def declared(*, group_size=None):
        return group_size

    @reg.register("undeclared")
    def undeclared(*, group_size=None):   # takes the keyword, but did not declare it
        return group_size

    assert reg.traits("declared") == {"group_size": True}
    assert reg.traits("undeclared") == {}
    assert reg.names("group_size") == ["declared"]
    with pytest.raises(KeyError, match="unknown thing 'other'"):
        reg.traits("other")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("declared")(declared)


def test_the_loop_passes_group_size_and_balancing_only_where_declared():
    assert acquisition.STRATEGIES.traits("crc") == {"group_size": True, "class_balanced": True,
                                                    "cold_start": True}
    assert acquisition.STRATEGIES.traits("entropy") == {}
    config = get_base_config()
    config.al.pseudo_al, config.al.group_size, config.al.query_size = True, 10, 10
    # entropy is wrapped to run once per class; crc balances its own groups
    config.strategies = ("entropy", "crc")
    built = validate(config)
    assert built["entropy"].fn.__name__ == "class_balanced_strategy"
    crc = built["crc"]
    assert crc.fn.__name__ != "class_balanced_strategy"
    assert crc.options["class_balanced"] is True and crc.group_size == 10
    assert "group_size" not in built["entropy"].options


def test_trait_lists_come_from_registrations():
    assert ssl.names("dropout") == ["fixmatch", "mean_teacher", "pi_model", "supervised"]
    assert ssl.names("augments_images") == ["fixmatch"]
    assert models.names("vectors") == ["linear", "mlp"]
    assert acquisition.STRATEGIES.names("cold_start") == ["crc", "random", "typiclust"]
    assert acquisition.STRATEGIES.names("needs_dropout") == ["bald"]
    assert data.tfds_name("svhn") == "svhn_cropped" and data.tfds_name("digits") is None
