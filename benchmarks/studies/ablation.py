"""Ablation of the skflowgen defaults on ADBench: each factor's effect on mean AUROC and AP.

What it reports
    The per-run rows of ``adbench.py`` runs whose detectors carry parameters in brackets
    (``glf-joint[max_iter=10,n_components=4]``) are grouped into variants. A variant's factors
    are its bracketed parameters plus ``score_method`` (``-joint`` / ``-marginal`` / default).
    For every variant: mean AUROC and AP over the datasets (each the mean over seeds), its
    average rank among the variants of the same model, its average rank by AUROC among itself
    and the seven other detectors of the ADBench table (IsolationForest, LOF, OCSVM, GMM, ECOD,
    PyOD's AE and VAE, read from the same raw files; 1 is best), and the number of datasets
    where it is more than 15 AUROC points below IsolationForest. For every
    factor and pair of its levels: the mean change of the variants' mean AUROC and AP between
    the two levels, over all pairs of variants that differ in that factor alone (main effect,
    averaged over the other factors), with the number of such pairs.

    Only variants that ran every seed (``--seeds``) on every dataset where IsolationForest did
    enter a table, so the variants are compared on the same runs.

How to run
    python benchmarks/adbench.py ../shared/data/adbench --n-jobs 2 \
        --raw benchmarks/studies/ablation_raw.csv \
        --output /tmp/ablation.md --resume --detectors 'glf[max_iter=10]' 'glf-joint[max_iter=10]' ...
    python benchmarks/studies/ablation.py benchmarks/studies/ablation_raw.csv \
        benchmarks/results/adbench_raw.csv \
        --match max_iter=10 score_method=joint
"""

import argparse
import csv
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks
import _common  # noqa: E402
from _common import DEFAULT_DETECTORS, detector, split_spec  # noqa: E402

OTHER_DETECTORS = [d for d in DEFAULT_DETECTORS if d not in ("glf", "lfp")]


def factors_of(spec):
    """``(model, {factor: level})`` of a detector spec: its fit and scoring parameters, the
    score method among them."""
    name, fit_params, score_params = split_spec(spec)
    base = detector(spec)
    params = {k: str(v) for k, v in {**fit_params, **score_params}.items()}
    params.setdefault("score_method", base.params.get("score_method", "default"))
    return base.fit_key.split("[")[0], params


def read_rows(paths, seeds):
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            rows += [r for r in csv.DictReader(f)
                     if not r.get("error") and int(r["seed"]) in seeds]
    return rows


def per_dataset(rows, metric):
    """``{detector: {dataset: [values over seeds]}}``."""
    table = defaultdict(lambda: defaultdict(list))
    for r in rows:
        table[r["detector"]][r["dataset"]].append(float(r[metric]))
    return table


def summarise(rows, model, n_seeds, match):
    """Variant rows and factor-effect rows of one model: the variants (detector specs with
    brackets containing every string of ``match``) that ran every seed on every dataset where
    IsolationForest did."""
    auroc, ap = per_dataset(rows, "auroc"), per_dataset(rows, "ap")
    complete = lambda det, ds: len(auroc[det].get(ds, [])) >= n_seeds  # noqa: E731
    datasets = sorted(ds for ds in auroc["iforest"] if complete("iforest", ds))
    variants = [d for d in auroc if "[" in d and factors_of(d)[0] == model
                and all(m in d for m in match) and all(complete(d, ds) for ds in datasets)]
    if not variants or not datasets:
        return None
    mean = lambda table, det: np.array([np.mean(table[det][ds]) for ds in datasets])  # noqa
    scores = {v: (mean(auroc, v), mean(ap, v)) for v in variants}
    iforest = mean(auroc, "iforest")
    ranks = _common.average_ranks(np.column_stack([scores[v][0] for v in variants]))
    baselines = [d for d in OTHER_DETECTORS if all(complete(d, ds) for ds in datasets)]
    baseline_auroc = [mean(auroc, d) for d in baselines]
    table_rank = {v: _common.average_ranks(np.column_stack([scores[v][0], *baseline_auroc]))
                  for v in variants}  # the variant's, then the baselines' ranks
    at_if = 1 + baselines.index("iforest")
    levels = {v: factors_of(v)[1] for v in variants}
    names = sorted({k for lv in levels.values() for k in lv})
    variant_rows = sorted(
        ([*(levels[v].get(k, "") for k in names), f"{scores[v][0].mean():.1f}",
          f"{scores[v][1].mean():.1f}", f"{rank:.2f}",
          f"{table_rank[v][0]:.2f} ({table_rank[v][at_if]:.2f})",
          str(int(np.sum(scores[v][0] < iforest - 15)))]
         for v, rank in zip(variants, ranks)), key=lambda row: -float(row[len(names)]))
    effect_rows = []
    for name in names:
        others = [k for k in names if k != name]
        by_rest = defaultdict(dict)
        for v in variants:
            by_rest[tuple(levels[v].get(k) for k in others)][levels[v].get(name)] = v
        for a, b in itertools.combinations(sorted({levels[v].get(name) for v in variants},
                                                  key=str), 2):
            pairs = [(g[a], g[b]) for g in by_rest.values() if a in g and b in g]
            if pairs:
                d_roc = np.mean([scores[y][0].mean() - scores[x][0].mean() for x, y in pairs])
                d_ap = np.mean([scores[y][1].mean() - scores[x][1].mean() for x, y in pairs])
                effect_rows.append([name, f"{a} -> {b}", f"{d_roc:+.1f}", f"{d_ap:+.1f}",
                                    str(len(pairs))])
    baseline_ranks = _common.average_ranks(np.column_stack(baseline_auroc))
    return (names, variant_rows, effect_rows, datasets, iforest.mean(),
            mean(ap, "iforest").mean(), dict(zip(baselines, baseline_ranks)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", nargs="+", type=Path, help="raw CSV files of adbench.py runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3],
                        help="seeds to use; a variant counts if it ran all of them everywhere")
    parser.add_argument("--match", nargs="*", default=[],
                        help="only variants whose spec contains each of these strings")
    parser.add_argument("--title", default="## Ablation of the defaults on ADBench")
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    parser.add_argument("--section", default="ablation")
    parser.add_argument("--notes", type=Path, help="Markdown text to put under the tables")
    args = parser.parse_args(argv)
    rows = read_rows(args.raw, set(args.seeds))
    lines = [args.title, "", *_common.provenance(), ""]
    for model in ("glf", "lfp"):
        summary = summarise(rows, model, len(args.seeds), args.match)
        if summary is None:
            continue
        names, variant_rows, effect_rows, datasets, if_roc, if_ap, others = summary
        lines += [
            f"### {model.upper()}: variants", "",
            f"{len(datasets)} datasets, seeds {', '.join(map(str, args.seeds))}, mean over "
            f"seeds; IsolationForest on the same runs: AUROC {if_roc:.1f}, "
            f"AP {if_ap:.1f}. `rank`: average rank among the variants of this table; `rank "
            f"of {len(others) + 1}`: average AUROC rank among the variant and the other "
            f"{len(others)} detectors (" + ", ".join(others) + "), IsolationForest's in "
            "brackets (without the variant they rank " +
            ", ".join(f"{d} {r:.2f}" for d, r in others.items()) + "); `< IF-15`: "
            "sets more than 15 AUROC points below IsolationForest; `support_fraction` None is "
            "`1 - contamination` (0.9).",
            "", _common.markdown_table(
                [*names, "AUROC", "AP", "rank", f"rank of {len(others) + 1}", "< IF-15"],
                variant_rows), "",
            f"### {model.upper()}: factor effects (mean change between levels, other factors "
            "matched)", "",
            _common.markdown_table(["factor", "levels", "AUROC", "AP", "pairs"], effect_rows),
            ""]
    if args.notes:
        lines += [args.notes.read_text().strip(), ""]
    body = "\n".join(lines)
    print(body)
    _common.replace_section(args.output, args.section, body)


if __name__ == "__main__":
    main()
