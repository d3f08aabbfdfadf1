"""One self-contained HTML page: a header, then plotly figures, with plotly.js embedded once so
the file opens offline. Each figure's JSON sits in a `<script type="application/json"
class="figure-data">` block that a short script draws (and that tests can read back)."""

from __future__ import annotations

import html

import plotly.graph_objects as go
import plotly.offline

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; padding: 0 12px; max-width: 1180px;
       color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f3f8; } td.text { text-align: left; }
.status-completed { color: #1a7f37; } .status-failed, .status-diverged { color: #cf222e; }
.figure { width: 100%; min-height: 520px; }
.note { color: #666; font-size: 14px; } pre { background: #f6f8fa; padding: 8px; overflow: auto; }
"""

_BOOT = """
for (const holder of document.querySelectorAll('script.figure-data')) {
  const fig = JSON.parse(holder.textContent);
  Plotly.newPlot(holder.dataset.target, fig.data, fig.layout, {responsive: true});
}
"""



def render_page(title: str, header: str, figures: dict[str, tuple[str, go.Figure]],
                footer: str = "") -> str:
    """`header` and `footer` are HTML; `figures` maps an id to (heading, figure), in page order."""
    parts = ["<!DOCTYPE html>\n<html><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style>",
             f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>",
             "</head><body>", header]
    for name, (heading, fig) in figures.items():
        data = fig.to_json().replace("<", "\\u003c")  # no '</script>' can end the block early
        parts.append(f"<h2 id='{name}'>{html.escape(heading)}</h2>"
                     f"<div id='figure-{name}' class='figure'></div>"
                     f"<script type='application/json' class='figure-data' "
                     f"data-target='figure-{name}' data-name='{name}'>{data}</script>")
    parts.append(footer)
    parts.append(f"<script>{_BOOT}</script></body></html>\n")
    return "\n".join(parts)
