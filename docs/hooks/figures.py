"""Publish the result figures where they are made: every PNG under benchmarks/results/ becomes
`results/figures/<name>.png` in the site, so a results page shows it with `![...](figures/<name>.png)`
and the benchmark scripts stay the one place a figure is written (no copy to drift)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

FIGURES = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
DEST = "results/figures"


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for png in sorted(FIGURES.glob("*.png")):
        files.append(File.generated(config, f"{DEST}/{png.name}", abs_src_path=str(png)))
    return files
