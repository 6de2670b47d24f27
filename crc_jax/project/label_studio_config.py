"""Label Studio labeling configs: the one crc-jax writes, and the names read from any other.

A labeling config is Label Studio's XML description of a project's interface. crc-jax
needs four things from it: the data key holding the image URL (`<Image value="$image">`),
the Image control's name, the Choices control's name (the `from_name` of every answer,
and the key of Label Studio's JSON-MIN, CSV and TSV exports), and the class names (each
`<Choice value=...>`, or its `alias` when one is given: Label Studio stores the alias).

The config written by default uses the names of Label Studio's stock "Image
Classification" template (`image`, `choice`), so a project made from that template and
one made from crc-jax's file read the same.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree
from xml.sax.saxutils import quoteattr

from crc_jax.project.store import ProjectError


@dataclasses.dataclass(frozen=True)
class LabelingNames:
    """Where crc-jax's answers live in a Label Studio project."""

    data_key: str = "image"      # task["data"][data_key] is the image URL
    image_name: str = "image"    # the <Image> control: `to_name` of every answer
    choice_name: str = "choice"  # the <Choices> control: `from_name`; the JSON-MIN/CSV column
    choices: tuple = ()          # the class names the config offers (empty: not known)


DEFAULT_NAMES = LabelingNames()


def config_xml(classes: list, names: LabelingNames = DEFAULT_NAMES) -> str:
    """The labeling config for `classes`: one image, one single-choice question."""
    if not classes:
        raise ProjectError("the project has no classes yet: give --classes to init, or import "
                           "labels first")
    choices = "".join(f"    <Choice value={quoteattr(str(c))}/>\n" for c in classes)
    return (f"<View>\n"
            f"  <Image name={quoteattr(names.image_name)} value={quoteattr('$' + names.data_key)}/>\n"
            f"  <Choices name={quoteattr(names.choice_name)} toName={quoteattr(names.image_name)}"
            f" choice=\"single\" showInLine=\"true\">\n{choices}  </Choices>\n</View>\n")


def parse(text: str, source: str = "labeling config") -> LabelingNames:
    """The names in a labeling config; exactly one Choices control over an Image is needed."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as err:
        raise ProjectError(f"{source}: not valid XML ({err})") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag == "Image"}
    if not images:
        raise ProjectError(f"{source}: no <Image> tag; crc-jax labels images")
    controls = [el for el in root.iter() if el.tag == "Choices" and el.get("toName") in images]
    if len(controls) != 1:
        found = ", ".join(repr(el.get("name")) for el in controls) or "none"
        raise ProjectError(f"{source}: needs exactly one <Choices> over an <Image>, found {found}")
    control = controls[0]
    value = images[control.get("toName")]
    if not value.startswith("$") or len(value) < 2:
        raise ProjectError(f"{source}: <Image name={control.get('toName')!r}> has value={value!r}; "
                           "expected a data key such as \"$image\"")
    choices = tuple(el.get("alias") or el.get("value") for el in control.iter("Choice"))
    return LabelingNames(data_key=value[1:], image_name=str(control.get("toName")),
                         choice_name=str(control.get("name")), choices=choices)


def check_classes(names: LabelingNames, classes: list, source: str) -> None:
    """Every class of the project must be a choice of the config (else Label Studio ticks nothing)."""
    missing = [c for c in classes if c not in names.choices]
    if missing:
        raise ProjectError(f"{source}: the <Choices name={names.choice_name!r}> control lacks the "
                           f"project's classes {', '.join(map(repr, missing))}; add a <Choice value=...> "
                           "for each")
