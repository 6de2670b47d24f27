"""Every relative link and image in README.md and the pages under docs/ points to a file or
folder that exists, so moving a page cannot leave a dead link behind."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """'page:line: target' for each relative link of `page` whose file does not exist."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text())
    found = []
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue                                  # a URL, mailto: or an anchor on the page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{page.relative_to(root)}:{line}: {target}")
    return found


def test_every_relative_link_in_readme_and_docs_exists():
    broken = [b for page in pages() for b in broken_links(page)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("[ok](page.md) ![fig](fig.png)\n```\n[x](nope)\n```\n")
    (tmp_path / "README.md").write_text("# t\n[docs](docs/page.md#x) [web](https://a.b) [a](#t)\n"
                                        "[gone](docs/gone.md)\n")
    found = [b for page in pages(tmp_path) for b in broken_links(page, tmp_path)]
    assert found == ["README.md:3: docs/gone.md", "docs/page.md:1: fig.png"]
