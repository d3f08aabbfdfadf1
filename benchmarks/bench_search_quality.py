"""Search quality on ground truth: how much of the true Pareto front each strategy finds, as a
function of the compute it spends (epochs trained), over many seeds, without training.

    python benchmarks/bench_search_quality.py [--quick] [--table digits|heldout|all]
        [--seeds 30] [--random-trials 16] [--ehvi] [--rungs 4:2,5:3]

Protocol (benchmarks/results/search_quality_PREREGISTRATION.md fixes the settings, seeds and pass
rule of the reported run):
- Two tables (`benchmarks/ground_truth.py`): `digits`, the default search's own regime, on which
  every default is tuned; `heldout`, another regime (`benchmarks/heldout_search.yaml`) on which
  nothing is tuned, reported last. Searches are replayed by `simulate.py`: 2 asynchronous workers,
  epochs taking their recorded time, the schedulers' and proposals' real decision code.
- Compute budget: what random search spends on `--random-trials` full-budget trials
  (random-trials x the table's epochs). Every strategy runs until it has trained that many epochs.
- Quality: the normalised hypervolume of the search's reported front (completed trials only: a
  pruned trial's low-fidelity readings never count), taken on the table's true full-budget
  values; reference point one tenth of each objective's range beyond its worst full-budget value
  in the table; 1.0 = the table's own front.
- Strategies, the same seeds for all: random search, TPE, NSGA-II (full budget each); Syne Tune's
  multi-objective regularized evolution (full budget; `--ehvi`: also its BoTorch EHVI, about a
  minute per search here); Ray Tune's single-metric ASHA on each objective (TPE); the default
  search (its sampler, proposals and rungs from `nas/default_search.yaml`); Syne Tune's MOASHA
  with the same sampler and rungs; both MOASHAs with random proposals (the rung rules alone); and
  the ablation: the default with each of its smarter parts switched (off if on, on if off):
  multi-fidelity proposals, the zero-cost proxy screen, adaptive rung placement, learning-curve
  extrapolation.
- The headline, per table: the smallest share of random search's compute at which the default's
  median hypervolume reaches 95% of random search's median at its full compute, with a bootstrap
  interval (seeds resampled, 2,000 times) of that share.

Writes, per table, `search_quality_<table>.csv.gz` (every strategy, seed and compute point),
`search_quality_<table>_summary.csv` and a plot (`search_quality_<table>.png` with kaleido, else
`.html`) under `--out`; the last lines printed are the headlines, the held-out table's last.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ground_truth import DATA_DIR, TABLES  # noqa: E402
from simulate import (FullBudget, Hypervolume, OptunaProposer, OurMOASHA, RayASHA,  # noqa: E402
                      SyneTuneMOASHA, Table, hypervolume_curve, simulate)

from nas.config import SearchConfig, default_config  # noqa: E402

TARGET = 0.95  # share of random search's full-compute hypervolume the headline asks for
BOOTSTRAP = 2000  # seed resamples for the compute share's interval
DEFAULT = "default (ours)"


@dataclass(frozen=True)
class Strategy:
    """A search as the simulator runs it: who proposes and who stops, per (table, seed)."""

    name: str
    proposer: Callable[[Table, int], Any]  # -> a simulate.Proposer
    scheduler: Callable[[Table, int], Any]  # -> a simulate.Scheduler


def proposer_options(config: SearchConfig) -> dict[str, Any]:
    """The default search's proposal options (`sampler.*`) as `OptunaProposer` takes them."""
    s = config.sampler
    return {"multi_fidelity": s.multi_fidelity, "min_points": s.min_points,
            "proxy": s.proxy if s.proxy_candidates > 1 else None,
            "candidates": s.proxy_candidates}


def rung_options(config: SearchConfig) -> dict[str, Any]:
    """The default search's rung options (`scheduler.*`) as `nas.rungs.Rungs` takes them."""
    sch = config.scheduler
    return {"placement": sch.placement, "extrapolate": sch.extrapolate,
            "min_completed": sch.min_completed, "rank_threshold": sch.rank_threshold}


def ablation(config: SearchConfig) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The default with each smarter part switched: (name, proposer options, rung options)."""
    p, r = proposer_options(config), rung_options(config)
    proxy = config.sampler.proxy or "naswot"
    out = [
        (("- " if p["multi_fidelity"] else "+ ") + "multi-fidelity proposals",
         {**p, "multi_fidelity": not p["multi_fidelity"]}, r),
        (("- " if p["proxy"] else "+ ") + f"{proxy} screen",
         {**p, "proxy": None if p["proxy"] else proxy,
          "candidates": p["candidates"] if p["candidates"] > 1 else 4}, r),
        (("- " if r["placement"] == "adaptive" else "+ ") + "adaptive rungs", p,
         {**r, "placement": "fixed" if r["placement"] == "adaptive" else "adaptive"}),
        (("- " if r["extrapolate"] else "+ ") + "extrapolation", p,
         {**r, "extrapolate": not r["extrapolate"]}),
    ]
    return [(f"default {name}", a, b) for name, a, b in out]


def strategies(table: Table, rungs: list[tuple[int, float]] = (), ehvi: bool = False
               ) -> tuple[list[Strategy], list[str], list[str]]:
    """Every strategy compared, the names of the ablation's, and why any peer could not run.
    `rungs`: other (grace period, reduction factor) pairs to run the default at."""
    config = default_config()
    sch, sampler = config.scheduler, config.sampler.name
    g, eta = sch.grace_period, sch.reduction_factor
    names = [o.name for o in table.objectives]
    p, r = proposer_options(config), rung_options(config)

    def optuna_(name: str, **options: Any) -> Callable[[Table, int], Any]:
        return lambda t, seed: OptunaProposer(t, name, seed, **options)

    out = [
        Strategy("random (full budget)", optuna_("random"), lambda t, s: FullBudget()),
        Strategy("tpe (full budget)", optuna_("tpe"), lambda t, s: FullBudget()),
        Strategy("nsga2 (full budget)", optuna_("nsga2"), lambda t, s: FullBudget()),
        *[Strategy(f"asha on {m} ({sampler})", optuna_(sampler),
                   lambda t, s, m=m: RayASHA(t, m, g, eta)) for m in names],
        Strategy(DEFAULT, optuna_(sampler, **p), lambda t, s: OurMOASHA(t, g, eta, **r)),
        Strategy("moasha (random, ours)", optuna_("random"), lambda t, s: OurMOASHA(t, g, eta)),
    ]
    missing = []
    try:
        SyneTuneMOASHA(table, g, eta, seed=0).add("probe")  # imports and builds it once
        from syne_tune_peers import PEERS, SyneTuneProposer
    except Exception as exc:  # noqa: BLE001 - say exactly why the peer is absent
        missing.append(f"Syne Tune could not run: {type(exc).__name__}: {exc}")
    else:
        out += [Strategy(f"moasha ({sampler}, syne-tune)", optuna_(sampler),
                         lambda t, s: SyneTuneMOASHA(t, g, eta, seed=s)),
                Strategy("moasha (random, syne-tune)", optuna_("random"),
                         lambda t, s: SyneTuneMOASHA(t, g, eta, seed=s))]
        for name, key in PEERS.items():
            if key != "ehvi" or ehvi:
                out.append(Strategy(name, lambda t, s, key=key: SyneTuneProposer(t, key, s),
                                    lambda t, s: FullBudget()))
    ablated = []
    for name, p2, r2 in ablation(config):
        if p2.get("proxy") and p2["proxy"] not in table.proxies:
            missing.append(f"{name}: no {p2['proxy']} scores for this table "
                           f"(benchmarks/table_proxies.py --table {table.name})")
            continue
        out.append(Strategy(name, optuna_(sampler, **p2),
                            lambda t, s, r2=r2: OurMOASHA(t, g, eta, **r2)))
        ablated.append(name)
    for g2, eta2 in rungs:
        name = f"default at g={g2} eta={eta2:g}"
        out.append(Strategy(name, optuna_(sampler, **p),
                            lambda t, s, g2=g2, eta2=eta2: OurMOASHA(t, g2, eta2, **r)))
        ablated.append(name)
    if sch.name != "moasha":
        missing.append(f"note: the default search's scheduler is {sch.name!r}, not moasha")
    return out, ablated, missing


def run(table: Table, strategy: Strategy, seeds: list[int], budget: int,
        measure: Hypervolume) -> tuple[np.ndarray, list[dict]]:
    """Hypervolume after every epoch of compute (seeds x budget) and per-seed counts."""
    curves, counts = [], []
    points = np.arange(1, budget + 1)
    for seed in seeds:
        trace = simulate(table, strategy.proposer(table, seed), strategy.scheduler(table, seed),
                         budget)
        curves.append(hypervolume_curve(table, trace, measure, points))
        status = pd.Series([t.status for t in trace.trials], dtype=object)
        counts.append({"trials": len(trace.trials), "completed": int((status == "completed").sum()),
                       "pruned": int((status == "pruned").sum()),
                       "unscored": int((status == "unscored").sum()),
                       "failed": int((status == "failed").sum()), "hours": trace.wall_s / 3600})
    return np.array(curves), counts


def reach(median: np.ndarray, goal: float) -> int | None:
    """The first compute (epochs) at which a median curve reaches `goal`, None if never."""
    hit = np.flatnonzero(median >= goal - 1e-12)
    return int(hit[0]) + 1 if len(hit) else None


def plot(curves: dict[str, np.ndarray], budget: int, path: Path, title: str) -> Path:
    """Median and IQR of each strategy's hypervolume against compute: `path`.png with kaleido,
    else `path`.html."""
    import plotly.graph_objects as go
    import plotly.io as pio

    share = 100 * np.arange(1, budget + 1) / budget
    fig = go.Figure()
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
               "#b6e880", "#ff97ff", "#fecb52", "#8c564b", "#7f7f7f"]
    for i, (name, curve) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        q1, med, q3 = np.percentile(curve, [25, 50, 75], axis=0)
        fig.add_trace(go.Scatter(x=np.r_[share, share[::-1]], y=np.r_[q3, q1[::-1]],
                                 fill="toself", fillcolor=color, opacity=0.15, line_width=0,
                                 hoverinfo="skip", showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=share, y=med, name=name, line_color=color, legendgroup=name,
                                 line_width=3 if name == DEFAULT else 1.5))
    fig.update_layout(title=title, xaxis_title="compute (% of random search's epochs)",
                      yaxis_title="normalised hypervolume (median, IQR band)", width=1100,
                      height=620, template="plotly_white")
    try:  # offline: kaleido gets plotly.js from plotly's own package, not a CDN
        from importlib import resources

        pio.defaults.plotlyjs = str(resources.files("plotly") / "package_data" / "plotly.min.js")
        fig.write_image(path.with_suffix(".png"))
        return path.with_suffix(".png")
    except Exception:  # noqa: BLE001 - no kaleido (or no browser for it): the HTML instead
        fig.write_html(path.with_suffix(".html"), include_plotlyjs=True)
        return path.with_suffix(".html")


def side_by_side(curves: dict[str, np.ndarray], budget: int, sampler: str) -> None:
    """Our MOASHA beside Syne Tune's with the same proposals' sampler and rungs: median
    hypervolume at 25/50/100% of the budget, and on how many seeds ours is at least as high."""
    pairs = [("moasha (random, ours)", "moasha (random, syne-tune)"),
             (DEFAULT, f"moasha ({sampler}, syne-tune)")]
    pairs = [(a, b) for a, b in pairs if a in curves and b in curves]
    if not pairs:
        return
    print("\nour MOASHA vs Syne Tune's MOASHA, the same seeds and rungs: median hypervolume "
          "(ours / syne-tune), seeds where ours >= syne-tune")
    for a, b in pairs:
        cells = []
        for share in (0.25, 0.5, 1.0):
            c = max(1, round(share * budget)) - 1
            x, y = curves[a][:, c], curves[b][:, c]
            cells.append(f"{share:4.0%}: {np.median(x):.3f} / {np.median(y):.3f} "
                         f"({int((x >= y - 1e-12).sum())}/{len(x)})")
        print(f"  {a} vs {b}: " + "   ".join(cells))


def bootstrap_share(default: np.ndarray, random_: np.ndarray, seed: int = 0
                    ) -> tuple[float, float, float]:
    """The compute share at which the default's median reaches 95% of random search's full
    median, over seed resamples: (2.5th, 50th, 97.5th percentile); inf = not reached."""
    rng = np.random.default_rng(seed)
    n, budget = default.shape
    shares = []
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, n, n)
        hit = reach(np.median(default[pick], axis=0), TARGET * np.median(random_[pick, -1]))
        shares.append(np.inf if hit is None else hit / budget)
    lo, mid, hi = np.quantile(shares, [0.025, 0.5, 0.975], method="inverted_cdf")  # inf-safe
    return float(lo), float(mid), float(hi)


def _share(value: float) -> str:
    return "not reached" if not np.isfinite(value) else f"{value:.0%}"


def evaluate(name: str, args: argparse.Namespace, trials: int) -> str:
    """Every strategy on one table; prints its tables and returns its headline."""
    t0 = time.time()
    table = Table.load(args.data, name)
    measure = Hypervolume.of_table(table)
    budget = trials * table.epochs
    seeds = list(range(args.seeds))
    extra = [(int(g), float(eta)) for g, eta in
             (pair.split(":") for pair in args.rungs.split(",") if pair)]
    chosen, ablated, missing = strategies(table, extra, args.ehvi)
    print(f"\n=== table {name}: {len(table.arch_ids)} architectures x {table.epochs} epochs "
          f"({int(table.completed.sum())} complete their budget), objectives "
          + ", ".join(f"{o.name} ({o.direction})" for o in table.objectives), flush=True)
    print("hypervolume: reference point (" + ", ".join(f"{v:.4f}" for v in measure.reference)
          + f"), the table's front = 1.0 (raw {measure.best:.4f})", flush=True)
    print(f"budget: {trials} full-budget trials = {budget} epochs per search; {len(seeds)} seeds "
          f"({seeds[0]}-{seeds[-1]}); 2 asynchronous workers", flush=True)
    for line in missing:
        print(line, flush=True)

    curves, rows, summary = {}, [], []
    for strategy in chosen:
        started = time.time()
        curve, counts = run(table, strategy, seeds, budget, measure)
        curves[strategy.name] = curve
        for seed, values in zip(seeds, curve):
            rows += [{"table": name, "strategy": strategy.name, "seed": seed,
                      "compute_epochs": c + 1, "compute_share": (c + 1) / budget,
                      "hypervolume": v} for c, v in enumerate(values)]
        summary.append((strategy, np.median(curve, axis=0), pd.DataFrame(counts).mean()))
        print(f"  {strategy.name}: {time.time() - started:.1f} s for {len(seeds)} searches",
              flush=True)

    random_full = float(np.median(curves["random (full budget)"][:, -1]))
    goal = TARGET * random_full
    lines = []
    for strategy, median, count in summary:
        hit = reach(median, goal)
        lines.append({
            "table": name, "strategy": strategy.name, "ablation": strategy.name in ablated,
            "hv_25%": median[budget // 4 - 1], "hv_50%": median[budget // 2 - 1],
            "hv_100%": median[-1],
            "compute_to_95%_of_random": None if hit is None else hit / budget,
            "trials": count["trials"], "completed": count["completed"],
            "pruned": count["pruned"], "unscored": count["unscored"], "failed": count["failed"],
            "simulated_hours": count["hours"]})
    frame = pd.DataFrame(lines)
    pd.DataFrame(rows).to_csv(args.out / f"search_quality_{name}.csv.gz", index=False)
    frame.to_csv(args.out / f"search_quality_{name}_summary.csv", index=False)
    figure = plot({k: v for k, v in curves.items() if k not in ablated}, budget,
                  args.out / f"search_quality_{name}",
                  f"Search quality on the {name} ground truth ({len(table.arch_ids)} "
                  f"architectures, {len(seeds)} seeds, budget {budget} epochs)")

    print(f"\nmedian normalised hypervolume over {len(seeds)} seeds at 25% / 50% / 100% of the "
          f"budget; compute to reach {TARGET:.0%} of random search's full-budget median "
          f"({random_full:.3f}); mean trials per search", flush=True)
    w = max(len(line["strategy"]) for line in lines)
    print(f"{'strategy':{w}s} {'25%':>6s} {'50%':>6s} {'100%':>6s} {'to 95%':>7s} "
          f"{'trials':>7s} {'done':>5s} {'pruned':>6s} {'unscored':>8s} {'failed':>6s}")
    for line in lines:
        if ablated and line["strategy"] == ablated[0]:
            print("ablation (the default with one part switched):")
        to95 = line["compute_to_95%_of_random"]
        print(f"{line['strategy']:{w}s} {line['hv_25%']:6.3f} {line['hv_50%']:6.3f} "
              f"{line['hv_100%']:6.3f} {'-' if to95 is None else f'{to95:.0%}':>7s} "
              f"{line['trials']:7.1f} {line['completed']:5.1f} {line['pruned']:6.1f} "
              f"{line['unscored']:8.1f} {line['failed']:6.1f}")
    side_by_side(curves, budget, default_config().sampler.name)
    ours = frame[frame["strategy"] == DEFAULT].iloc[0]
    peers = frame[(frame["strategy"] != DEFAULT) & ~frame["ablation"]]
    for col in ("hv_25%", "hv_50%", "hv_100%"):
        best = peers.loc[peers[col].idxmax()]
        verdict = "yes" if ours[col] >= best[col] - 1e-12 else "no"
        print(f"default's median >= every peer's at {col[3:]} of the compute: {verdict} "
              f"({ours[col]:.3f}; best peer {best['strategy']} {best[col]:.3f})")
    lo, _, hi = bootstrap_share(curves[DEFAULT], curves["random (full budget)"])
    print(f"wrote {args.out / f'search_quality_{name}.csv.gz'}, "
          f"{args.out / f'search_quality_{name}_summary.csv'}, {figure} "
          f"({time.time() - t0:.0f} s)", flush=True)
    median = np.median(curves[DEFAULT], axis=0)
    hit = reach(median, goal)
    at = hit if hit is not None else budget
    return (f"search quality ({name}): the default search reaches "
            f"{100 * median[at - 1] / random_full:.0f}% of full-budget random search's "
            f"hypervolume at {100 * at / budget:.0f}% of its compute "
            f"(95% bootstrap interval over seeds: {_share(lo)} to {_share(hi)}; "
            f"{len(seeds)} seeds)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer seeds (5) and a smaller compute budget (8 trials)")
    parser.add_argument("--table", choices=[*TABLES, "all"], default="all",
                        help="the table(s) to search; all: digits, then the held-out table")
    parser.add_argument("--seeds", type=int, default=None, help="default 30, --quick 5")
    parser.add_argument("--random-trials", type=int, default=None,
                        help="random search's full-budget trials: the compute budget (default "
                             "16, --quick 8)")
    parser.add_argument("--ehvi", action="store_true",
                        help="also Syne Tune's EHVI (BoTorch GPs: about a minute per search)")
    parser.add_argument("--rungs", default="",
                        help="also run the default at these grace_period:reduction_factor "
                             "pairs, e.g. 3:3,4:2")
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (5 if args.quick else 30)
    if args.seeds < 30 and not args.quick:
        parser.error("--seeds: at least 30 for a reported result (or --quick)")
    trials = args.random_trials or (8 if args.quick else 16)
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(TABLES) if args.table == "all" else [args.table]
    headlines = [evaluate(name, args, trials) for name in names]
    print()
    for line in headlines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
