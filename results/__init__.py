"""What came out of a search: `table` (a run directory as one DataFrame), `pareto` (non-dominated
sorting), `report` (one self-contained HTML file), `export` (YAML configs out, models back in),
`show` (the best trials as text). Import the submodule you need; plotly loads only with `report`."""
