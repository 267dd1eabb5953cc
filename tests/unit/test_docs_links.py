"""Every relative link in the project's Markdown resolves to a file or folder of the tree.

Pure: reads files only. External links (http, mailto) and in-page anchors are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The docs a newcomer reads; ui/ and node_modules carry third-party Markdown.
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", ROOT / "infra" / "README.md", *ROOT.glob("docs/**/*.md")]
# [text](target) and ![alt](target); a target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def relative_links(text: str) -> list[str]:
    text = CODE.sub("", text)  # links inside code are examples, not links
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


def test_link_pattern_finds_relative_links_only() -> None:
    text = "[a](docs/x.md#top) ![b](img.png) [c](https://e.org) [d](#here) `[e](no.md)`"
    assert relative_links(text) == ["docs/x.md", "img.png"]


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in PAGES:
        if not page.is_file():
            continue
        for target in relative_links(page.read_text(encoding="utf-8")):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_service_pages_exist_and_are_linked_from_the_architecture() -> None:
    arch = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name in ("collector", "ingest", "commander", "replicator", "alerter", "gateway", "authcallout", "cli"):
        assert (ROOT / "docs" / "services" / f"{name}.md").is_file()
        assert f"services/{name}.md" in arch
