"""Search quality on the ground-truth table: how much of the true Pareto front each strategy finds,
as a function of the compute it spends (epochs trained), over many seeds, without training.

    python benchmarks/bench_search_quality.py [--quick] [--seeds 10] [--random-trials 16]
        [--rungs 4:2,5:3]

Protocol (fixed before any result was looked at, except the default budget: 32 trials at first,
16 once the table came out at well under the planned few hundred architectures, so that random
search does not train half of it):
- The table: `benchmarks/data/digits_ground_truth.parquet` (`benchmarks/ground_truth.py`), the
  default search's space, trial and objectives. Searches are replayed by `simulate.py`: 2
  asynchronous workers, epochs taking their recorded time, the schedulers' real decision code.
- Compute budget: what random search spends on `--random-trials` full-budget trials
  (random-trials x epochs). Every strategy runs until it has trained that many epochs.
- Quality: the normalised hypervolume of the search's reported front (completed trials only: a
  pruned trial's low-fidelity readings never count), taken on the table's true full-budget
  values; reference point one tenth of each objective's range beyond its worst full-budget value
  in the table; 1.0 = the table's own front.
- Strategies, the same seeds for all: random search, TPE, NSGA-II (full budget each); Ray Tune's
  single-metric ASHA on each objective (TPE); our MOASHA (the default search: its sampler, grace
  period and reduction factor from `nas/default_search.yaml`); Syne Tune's MOASHA with the same
  sampler and rungs; and both MOASHAs with random proposals (the rung rules alone).
- The headline: the smallest share of random search's compute at which the default strategy's
  median hypervolume reaches 95% of random search's median at its full compute.

Writes `search_quality.csv` (every strategy, seed and compute point), `search_quality_summary.csv`
and a plot (`search_quality.png` with kaleido, else `.html`) under `--out`; the last line printed
is the headline.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ground_truth import DATA_DIR  # noqa: E402
from simulate import (FullBudget, Hypervolume, OptunaProposer, OurMOASHA, RayASHA,  # noqa: E402
                      SyneTuneMOASHA, Table, hypervolume_curve, simulate)

from nas.config import default_config  # noqa: E402

TARGET = 0.95  # share of random search's full-compute hypervolume the headline asks for


@dataclass(frozen=True)
class Strategy:
    name: str
    sampler: str
    scheduler: Callable[[Table, int], object]  # (table, seed) -> a simulate.Scheduler


def strategies(table: Table, rungs: list[tuple[int, float]] = ()) -> tuple[list[Strategy], str,
                                                                             list[str]]:
    """Every strategy compared, the default's name, and why any peer could not run. `rungs`:
    other (grace period, reduction factor) pairs to run both MOASHAs at, with the default sampler
    (an ablation of the default's rungs)."""
    config = default_config()
    sch, sampler = config.scheduler, config.sampler.name
    g, eta = sch.grace_period, sch.reduction_factor
    names = [o.name for o in table.objectives]
    default = f"moasha ({sampler}, ours, default)"
    out = [
        Strategy("random (full budget)", "random", lambda t, s: FullBudget()),
        Strategy("tpe (full budget)", "tpe", lambda t, s: FullBudget()),
        Strategy("nsga2 (full budget)", "nsga2", lambda t, s: FullBudget()),
        *[Strategy(f"asha on {m} ({sampler})", sampler,
                   lambda t, s, m=m: RayASHA(t, m, g, eta)) for m in names],
        Strategy(default, sampler, lambda t, s: OurMOASHA(t, g, eta)),
        Strategy("moasha (random, ours)", "random", lambda t, s: OurMOASHA(t, g, eta)),
    ]
    missing = []
    try:
        SyneTuneMOASHA(table, g, eta, seed=0).add("probe")  # imports and builds it once
    except Exception as exc:  # noqa: BLE001 - say exactly why the peer is absent
        missing.append(f"Syne Tune's MOASHA could not run: {type(exc).__name__}: {exc}")
    else:
        out += [Strategy(f"moasha ({sampler}, syne-tune)", sampler,
                         lambda t, s: SyneTuneMOASHA(t, g, eta, seed=s)),
                Strategy("moasha (random, syne-tune)", "random",
                         lambda t, s: SyneTuneMOASHA(t, g, eta, seed=s))]
    for g2, eta2 in rungs:
        out.append(Strategy(f"moasha ({sampler}, ours, g={g2} eta={eta2:g})", sampler,
                            lambda t, s, g2=g2, eta2=eta2: OurMOASHA(t, g2, eta2)))
        if not missing:
            out.append(Strategy(f"moasha ({sampler}, syne-tune, g={g2} eta={eta2:g})", sampler,
                                lambda t, s, g2=g2, eta2=eta2: SyneTuneMOASHA(t, g2, eta2, seed=s)))
    if sch.name != "moasha":
        missing.append(f"note: the default search's scheduler is {sch.name!r}, not moasha")
    return out, default, missing


def run(table: Table, strategy: Strategy, seeds: list[int], budget: int,
        measure: Hypervolume) -> tuple[np.ndarray, list[dict]]:
    """Hypervolume after every epoch of compute (seeds x budget) and per-seed counts."""
    curves, counts = [], []
    points = np.arange(1, budget + 1)
    for seed in seeds:
        trace = simulate(table, OptunaProposer(table, strategy.sampler, seed),
                         strategy.scheduler(table, seed), budget)
        curves.append(hypervolume_curve(table, trace, measure, points))
        status = pd.Series([t.status for t in trace.trials])
        counts.append({"trials": len(trace.trials), "completed": int((status == "completed").sum()),
                       "pruned": int((status == "pruned").sum()),
                       "unscored": int((status == "unscored").sum()),
                       "failed": int((status == "failed").sum()), "hours": trace.wall_s / 3600})
    return np.array(curves), counts


def reach(median: np.ndarray, goal: float) -> int | None:
    """The first compute (epochs) at which a median curve reaches `goal`, None if never."""
    hit = np.flatnonzero(median >= goal - 1e-12)
    return int(hit[0]) + 1 if len(hit) else None


def plot(curves: dict[str, np.ndarray], budget: int, out: Path, title: str) -> Path:
    import plotly.graph_objects as go

    share = 100 * np.arange(1, budget + 1) / budget
    fig = go.Figure()
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
               "#b6e880", "#ff97ff", "#fecb52"]
    for i, (name, curve) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        q1, med, q3 = np.percentile(curve, [25, 50, 75], axis=0)
        fig.add_trace(go.Scatter(x=np.r_[share, share[::-1]], y=np.r_[q3, q1[::-1]],
                                 fill="toself", fillcolor=color, opacity=0.15, line_width=0,
                                 hoverinfo="skip", showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=share, y=med, name=name, line_color=color, legendgroup=name,
                                 line_width=3 if "default" in name else 1.5))
    fig.update_layout(title=title, xaxis_title="compute (% of random search's epochs)",
                      yaxis_title="normalised hypervolume (median, IQR band)", width=1000,
                      height=600, template="plotly_white")
    try:
        path = out / "search_quality.png"
        fig.write_image(path)
    except Exception:  # noqa: BLE001 - no kaleido (or no browser for it): the HTML instead
        path = out / "search_quality.html"
        fig.write_html(path, include_plotlyjs=True)
    return path


def side_by_side(curves: dict[str, np.ndarray], budget: int) -> None:
    """Our MOASHA beside Syne Tune's, pair by pair (same sampler, rungs and seeds): median
    hypervolume at 25/50/100% of the budget, and on how many seeds ours is at least as high."""
    pairs = [(name, name.replace("ours, default", "syne-tune").replace("ours", "syne-tune"))
             for name in curves if "ours" in name]
    pairs = [(a, b) for a, b in pairs if b in curves]
    if not pairs:
        return
    print("\nour MOASHA vs Syne Tune's MOASHA, the same sampler, rungs and seeds: median "
          "hypervolume (ours / syne-tune), seeds where ours >= syne-tune")
    for a, b in pairs:
        cells = []
        for share in (0.25, 0.5, 1.0):
            c = max(1, round(share * budget)) - 1
            x, y = curves[a][:, c], curves[b][:, c]
            cells.append(f"{share:4.0%}: {np.median(x):.3f} / {np.median(y):.3f} "
                         f"({int((x >= y - 1e-12).sum())}/{len(x)})")
        print(f"  {a.replace(', ours', '').replace(' ours', ''):28s} " + "   ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer seeds (5) and a smaller compute budget (8 trials)")
    parser.add_argument("--seeds", type=int, default=None, help="default 10, --quick 5")
    parser.add_argument("--random-trials", type=int, default=None,
                        help="random search's full-budget trials: the compute budget (default "
                             "16, --quick 8)")
    parser.add_argument("--rungs", default="",
                        help="also run both MOASHAs at these grace_period:reduction_factor pairs, "
                             "e.g. 3:3,4:2 (the default's come from nas/default_search.yaml)")
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (5 if args.quick else 10)
    if args.seeds < 10 and not args.quick:
        parser.error("--seeds: at least 10 for a reported result")
    trials = args.random_trials or (8 if args.quick else 16)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    table = Table.load(args.data)
    measure = Hypervolume.of_table(table)
    budget = trials * table.epochs
    seeds = list(range(args.seeds))
    extra = [(int(g), float(eta)) for g, eta in
             (pair.split(":") for pair in args.rungs.split(",") if pair)]
    chosen, default, missing = strategies(table, extra)
    print(f"table: {len(table.arch_ids)} architectures x {table.epochs} epochs "
          f"({int(table.completed.sum())} complete their budget), objectives "
          + ", ".join(f"{o.name} ({o.direction})" for o in table.objectives), flush=True)
    print("hypervolume: reference point (" + ", ".join(f"{v:.4f}" for v in measure.reference)
          + f"), the table's front = 1.0 (raw {measure.best:.4f})", flush=True)
    print(f"budget: {trials} full-budget trials = {budget} epochs per search; {len(seeds)} seeds; "
          "2 asynchronous workers", flush=True)
    for line in missing:
        print(line, flush=True)

    curves, rows, summary = {}, [], []
    for strategy in chosen:
        started = time.time()
        curve, counts = run(table, strategy, seeds, budget, measure)
        curves[strategy.name] = curve
        for seed, values in zip(seeds, curve):
            rows += [{"strategy": strategy.name, "seed": seed, "compute_epochs": c + 1,
                      "compute_share": (c + 1) / budget, "hypervolume": v}
                     for c, v in enumerate(values)]
        summary.append((strategy, np.median(curve, axis=0), pd.DataFrame(counts).mean(),
                        time.time() - started))
        print(f"  {strategy.name}: {time.time() - started:.1f} s for {len(seeds)} searches",
              flush=True)

    random_full = float(np.median(curves["random (full budget)"][:, -1]))
    goal = TARGET * random_full
    lines = []
    for strategy, median, count, _ in summary:
        hit = reach(median, goal)
        lines.append({
            "strategy": strategy.name,
            "hv_25%": median[budget // 4 - 1], "hv_50%": median[budget // 2 - 1],
            "hv_100%": median[-1],
            "compute_to_95%_of_random": None if hit is None else hit / budget,
            "trials": count["trials"], "completed": count["completed"],
            "pruned": count["pruned"], "unscored": count["unscored"], "failed": count["failed"],
            "simulated_hours": count["hours"]})
    frame = pd.DataFrame(lines)
    pd.DataFrame(rows).to_csv(args.out / "search_quality.csv", index=False)
    frame.to_csv(args.out / "search_quality_summary.csv", index=False)
    figure = plot({k: v for k, v in curves.items() if "g=" not in k}, budget, args.out,  # no ablation
                  f"Search quality on the digits ground truth ({len(table.arch_ids)} "
                  f"architectures, {len(seeds)} seeds, budget {budget} epochs)")

    print(f"\nmedian normalised hypervolume over {len(seeds)} seeds at 25% / 50% / 100% of the "
          f"budget; compute to reach {TARGET:.0%} of random search's full-budget median "
          f"({random_full:.3f}); mean trials per search", flush=True)
    w = max(len(line["strategy"]) for line in lines)
    print(f"{'strategy':{w}s} {'25%':>6s} {'50%':>6s} {'100%':>6s} {'to 95%':>7s} "
          f"{'trials':>7s} {'done':>5s} {'pruned':>6s} {'unscored':>8s} {'failed':>6s}")
    for line in lines:
        to95 = line["compute_to_95%_of_random"]
        print(f"{line['strategy']:{w}s} {line['hv_25%']:6.3f} {line['hv_50%']:6.3f} "
              f"{line['hv_100%']:6.3f} {'-' if to95 is None else f'{to95:.0%}':>7s} "
              f"{line['trials']:7.1f} {line['completed']:5.1f} {line['pruned']:6.1f} "
              f"{line['unscored']:8.1f} {line['failed']:6.1f}")
    side_by_side(curves, budget)
    print(f"\nwrote {args.out / 'search_quality.csv'}, {args.out / 'search_quality_summary.csv'}, "
          f"{figure} ({time.time() - t0:.0f} s)", flush=True)
    ours = next(m for s, m, _, _ in summary if s.name == default)
    hit = reach(ours, goal)
    at = hit if hit is not None else budget
    print(f"search quality: {default} reaches {100 * ours[at - 1] / random_full:.0f}% of "
          f"full-budget random search's hypervolume at {100 * at / budget:.0f}% of its compute")
    return 0


if __name__ == "__main__":
    sys.exit(main())
