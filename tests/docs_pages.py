"""The manual's pages as the tests read them: where they are, and the blocks a page marks runnable.

Convention: a fenced block directly preceded by the line `<!-- runnable -->` is run by a test, as
it is written. The `bash` blocks of a page run in order, as one script, in a fresh folder
(`tests/test_docs.py`); the `python` ones are the standalone-export snippets, which need an
exported model and a site holding only onnxruntime or torch (`tests/test_standalone_export.py`).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = "<!-- runnable -->"
RUNNABLE = re.compile(r"^<!-- runnable -->\n```(\w+)\n(.*?)^```$", re.M | re.S)


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


def runnable_blocks(page: Path, language: str | None = None) -> list[tuple[str, str]]:
    """(language, code) of every block `page` marks runnable, in page order; a marker that is not
    right above a fenced block is an error, so no block is silently left out."""
    text = page.read_text()
    blocks = [(m.group(1), m.group(2)) for m in RUNNABLE.finditer(text)]
    if len(blocks) != text.count(MARKER):
        raise ValueError(f"{page}: a `{MARKER}` line must be followed directly by a fenced block")
    return [b for b in blocks if language is None or b[0] == language]
