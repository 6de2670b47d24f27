"""The markers around a published table or number: `<!-- table:NAME -->` ... `<!-- /table -->`.

Pages that write their own tables (ntk_compare, transfer_backbone) wrap them with `marked`;
experiments/tables.py finds the blocks with BLOCK and recomputes them.
"""

from __future__ import annotations

import re

BLOCK = re.compile(r"<!-- table:([A-Za-z0-9_.-]+) -->(.*?)<!-- /table -->", re.DOTALL)


def marked(name: str, text: str) -> str:
    """`text` as a block between the markers of table NAME."""
    return f"<!-- table:{name} -->\n\n{text.strip()}\n\n<!-- /table -->"
