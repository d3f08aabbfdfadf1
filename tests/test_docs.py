"""The user's manual cannot rot: it builds with `mkdocs build --strict` (no broken link, anchor or
reference, no page left out of the nav), the built site fetches nothing from the network, its
pages and figures render in headless Chromium from disk, the configuration reference lists every
field the config classes accept, and the shell blocks a page marks runnable run as written.

The site is built once per module (about 10 s).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import typing
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from docs_pages import DOCS, ROOT, runnable_blocks
from test_report_browser import run_chromium, screenshot

sys.path.insert(0, str(DOCS / "hooks"))
import config_reference  # noqa: E402  (the MkDocs hook, imported as the build imports it)

from nas.config import SearchConfig  # noqa: E402
from nas.layout_study.config import StudyConfig  # noqa: E402

FIGURES = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    problems = [line for line in result.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not problems, "\n".join(problems)
    return out


# ---- the build ----------------------------------------------------------------------------------

def test_every_page_is_built_and_in_the_nav(site):
    """Strict mode already fails on a page missing from the nav; every page has its HTML."""
    for page in DOCS.rglob("*.md"):
        if "hooks" in page.parts:
            continue
        html = site / page.relative_to(DOCS).with_suffix(".html")
        assert html.is_file(), f"{page} was not built"


def test_strict_build_fails_on_a_broken_link(tmp_path):
    """The check is real: a page linking to a missing page fails `mkdocs build --strict`."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[gone](missing.md)\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: x\ntheme: {name: material, font: false}\n"
                                         "validation: {anchors: warn, unrecognized_links: warn}\n")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode != 0 and "missing.md" in result.stderr


def test_result_figures_are_in_the_site(site):
    pngs = sorted(FIGURES.glob("*.png"))
    assert pngs, "benchmarks/results/ holds no figure"
    for png in pngs:
        built = site / "results" / "figures" / png.name
        assert built.read_bytes() == png.read_bytes()
    shown = set()
    for html in (site / "results").glob("*.html"):
        shown |= set(re.findall(r'<img[^>]+src="figures/([^"]+\.png)"', html.read_text()))
    assert shown == {p.name for p in pngs}, "every result figure appears on a results page"


# ---- offline ------------------------------------------------------------------------------------

class Resources(HTMLParser):
    """Every URL a page loads: scripts, stylesheets, icons and fonts, images, frames."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video", "embed") and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href") and attrs.get("rel") not in ("canonical", "alternate"):
            self.urls.append(attrs["href"])


def remote(url: str) -> bool:
    return bool(re.match(r"^(https?:)?//", url.strip()))


def test_the_site_loads_nothing_from_the_network(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) > 20
    for html in pages:
        parser = Resources()
        parser.feed(html.read_text())
        assert parser.urls, f"{html}: no resources found (is the parser reading the page?)"
        outside = [u for u in parser.urls if remote(u)]
        assert not outside, f"{html.relative_to(site)} loads {outside}"
    for css in site.rglob("*.css"):
        text = css.read_text(errors="replace")
        imports = re.findall(r"@import\s+(?:url\()?['\"]?([^'\")\s;]+)", text)
        fonts = re.findall(r"@font-face\s*{[^}]*url\(['\"]?([^'\")]+)", text)
        assert not [u for u in imports + fonts if remote(u)], css


def test_the_offline_check_sees_a_cdn_script():
    parser = Resources()
    parser.feed('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
                '<script src="//unpkg.com/x"></script><img src="figures/a.png">')
    assert [u for u in parser.urls if remote(u)] == ["https://fonts.googleapis.com/css?family=Roboto",
                                                      "//unpkg.com/x"]


# ---- in a browser, from disk --------------------------------------------------------------------

PROBE = """<script>window.addEventListener("load", () => {
  const shown = [...document.images].map(i => `${i.getAttribute("src")}=${i.naturalWidth}`);
  document.body.setAttribute("data-images", shown.join(" "));
  document.body.setAttribute("data-text", String(document.body.innerText.length));
});</script>"""


def dump_dom(html: Path, profile: Path) -> str:
    result = run_chromium(profile, "--virtual-time-budget=5000", "--dump-dom", html.resolve().as_uri())
    assert result.stdout, f"chromium dumped no DOM (exit {result.returncode}): {result.stderr[-2000:]}"
    return result.stdout


@pytest.mark.parametrize("page, figure", [
    ("index.html", "search_quality_heldout.png"),
    ("results/deit-recipe.html", "layout_study_quick_distillation.png"),
])
def test_a_page_and_its_figure_render_in_chromium(site, tmp_path, page, figure):
    """Opened from disk: the page's text is laid out, its figure decodes (naturalWidth > 0), and a
    screenshot is not blank."""
    original = site / page
    probed = original.with_name(original.stem + ".probe.html")
    probed.write_text(original.read_text().replace("</body>", PROBE + "</body>"))
    dom = dump_dom(probed, tmp_path / "profile")
    images = dict(item.rsplit("=", 1) for item in
                  re.search(r'data-images="([^"]*)"', dom).group(1).split())
    ours = {src: int(width) for src, width in images.items() if src.endswith(figure)}
    assert ours and all(width > 100 for width in ours.values()), images
    assert int(re.search(r'data-text="(\d+)"', dom).group(1)) > 1000
    pixels = screenshot(original, tmp_path / "shot.png", tmp_path / "profile-shot")
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    assert len(colours) >= 32 and counts.max() < 0.95 * counts.sum(), "the page looks blank"


# ---- the configuration reference ----------------------------------------------------------------

def field_paths(cls: type, prefix: str = "") -> list[str]:
    """Every field path a config accepts, walked here independently of the generator."""
    paths = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        paths.append(path)
        hint = hints[f.name]
        candidates = [hint, *typing.get_args(hint)]
        for candidate in candidates:
            args = typing.get_args(candidate)
            if dataclasses.is_dataclass(candidate):
                paths += field_paths(candidate, path)
                break
            if typing.get_origin(candidate) is tuple and args and dataclasses.is_dataclass(args[0]):
                paths += field_paths(args[0], f"{path}[i]")
                break
    return paths


@pytest.mark.parametrize("cls, top", [(SearchConfig, "search"), (StudyConfig, "study")])
def test_the_configuration_reference_lists_every_field(site, cls, top):
    html = (site / "reference" / "configuration.html").read_text()
    documented = {row.path: row for s in config_reference.sections(cls) for row in s.rows}
    paths = field_paths(cls)
    assert len(paths) > 40
    for path in paths:
        assert path in documented, f"{top}.{path} is missing from the reference"
        assert len(documented[path].doc) > 10, f"{top}.{path} has no description"
        assert f"<code>{path}</code>" in html, f"{top}.{path} is not on the built page"
    assert set(documented) == set(paths)
    assert f'id="{top}"' in html


def test_the_reference_shows_the_code_defaults():
    rows = {row.path: row for s in config_reference.sections(SearchConfig) for row in s.rows}
    assert rows["num_trials"].default == str(SearchConfig().num_trials)
    assert rows["trial.train.lr"].default == str(SearchConfig().trial.train.lr)
    assert rows["trial.train.distill.teacher"].default == "required"
    study = {row.path: row for s in config_reference.sections(StudyConfig) for row in s.rows}
    assert study["train.batch_size"].default == "32"  # the study's own training default


def test_a_field_without_a_description_fails_the_reference():
    @dataclasses.dataclass(frozen=True)
    class Documented:
        kept: int = 1
        """What it does."""
        forgotten: int = 2

    with pytest.raises(config_reference.UndocumentedField, match="forgotten"):
        config_reference.sections(Documented)


# ---- runnable blocks ----------------------------------------------------------------------------

def test_every_runnable_marker_sits_on_a_block():
    pages = [p for p in DOCS.rglob("*.md") if "hooks" not in p.parts]
    blocks = {p: runnable_blocks(p) for p in pages}
    assert sum(len(b) for b in blocks.values()) >= 10
    for page, found in blocks.items():
        for language, code in found:
            assert language in ("bash", "python"), f"{page}: no runner for {language}"
            if language == "python":  # run by tests/test_standalone_export.py
                assert page.name == "results-and-export.md" and re.search(r'\.(onnx|pt2)"', code)


def run_page(page: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    script = "\n".join(code for _, code in runnable_blocks(page, "bash"))
    assert script.strip(), f"{page}: no runnable bash block"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (f"{page.relative_to(DOCS)}: exit {result.returncode}\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def test_the_budgets_page_runs(tmp_path):
    result = run_page(DOCS / "user-guide" / "budgets.md", tmp_path)
    assert "coatnet-0" in result.stdout and "deit-ti" in result.stdout


def test_the_search_space_guide_runs(tmp_path):
    result = run_page(DOCS / "how-to" / "search-space.md", tmp_path)
    assert "layouts:" in result.stdout and "architectures:" in result.stdout


@pytest.mark.slow
def test_getting_started_leaves_what_it_says(tmp_path):
    """The first search, its report and its export, as the page runs them, leave the files the
    page (and the README's tour) name."""
    run_page(DOCS / "getting-started.md", tmp_path)
    run = tmp_path / "runs" / "first"
    for name in ("search.yaml", "summary.json", "study.journal", "report.html", "table.csv",
                 "table.parquet"):
        assert (run / name).is_file(), name
    assert list((run / "trials").glob("*.json")) and list((run / "weights").glob("*.pt"))
    exported = run / "exported" / "pareto"
    for suffix in (".yaml", ".onnx", ".pt2"):
        assert list(exported.glob(f"01-*{suffix}")), suffix


@pytest.mark.slow
@pytest.mark.parametrize("page", ["how-to/image-folder.md", "how-to/resume-and-move.md"])
def test_a_how_to_guide_runs(tmp_path, page):
    result = run_page(DOCS / page, tmp_path)
    assert "trials:" in result.stdout
