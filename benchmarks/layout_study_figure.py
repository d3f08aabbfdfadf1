"""The paper's Figure 2 redrawn from a finished layout study, as a PNG for the results pages:
validation accuracy against training loss, one panel per data size, a row per protocol.

    python benchmarks/layout_study_figure.py FOLDER --out figure.png [--beside OTHER_FOLDER]

FOLDER (and OTHER_FOLDER): a study directory, or a folder with its study.csv and curves.csv.
Needs kaleido (the `bench` extra), which drives an installed Chrome/Chromium.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import plotly  # noqa: E402
import plotly.io as pio  # noqa: E402

from results.layout_study.report import ProtocolCurves, figure2  # noqa: E402

# kaleido fetches plotly.js from a CDN unless told where plotly's own copy lies: offline here.
pio.defaults.plotlyjs = str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--beside", type=Path)
    parser.add_argument("--sizes", nargs="+", help="only these sizes (labels, e.g. 5/class)")
    args = parser.parse_args()
    protocols = [ProtocolCurves.read(args.folder)]
    if args.beside:
        protocols.append(ProtocolCurves.read(args.beside))
    if args.sizes:
        protocols = [ProtocolCurves(p.name, p.table, p.curves, [s for s in p.sizes if s in args.sizes])
                     for p in protocols]
    fig = figure2(protocols)
    fig.update_layout(width=420 * max(len(p.sizes) for p in protocols), margin={"t": 60})
    fig.write_image(args.out, scale=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
