"""runs/NAME/report.md from the evaluation results, with the figures embedded as plots/*.png.

The report is rebuilt from the run's whole "evaluation" record each time, so tasks evaluated by an
earlier invocation stay in it. Percentages in the report; fractions in results.json.
"""

from __future__ import annotations

from pathlib import Path

OOD_COLUMNS = (("tnr", "TNR@TPR95"), ("auroc", "AUROC"), ("dtacc", "DTACC"), ("auin", "AUIN"), ("auout", "AUOUT"))
# every figure the report may embed, relative to the run folder
FIGURES = ("plots/roc_osr.png", "plots/hist_osr.png", "plots/roc_ood.png", "plots/hist_ood.png", "plots/corruption.png",
           "plots/linear_curve.png", "plots/activated_area.png", "plots/cam_grid.png")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _mean_std(stat: dict | None) -> str:
    return "n/a" if stat is None else f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _settings(settings: dict) -> str:
    keys = ("topk", "score", "max_images", "max_bank", "seed", "checkpoint_epoch")
    parts = [f"{key} {settings[key]}" for key in keys if key in settings]
    return f"_settings: {', '.join(parts)}_"


def _figures(names: list[str], figures: set[str]) -> list[str]:
    return [f"![{Path(name).stem}]({name})" for name in names if name in figures]


def _osr_section(osr: dict, figures: set[str]) -> list[str]:
    lines = ["## Open-set recognition (known vs unknown test classes)", "", _settings(osr["settings"]), ""]
    columns = [*OOD_COLUMNS, ("closed_acc", "closed-set acc.")]
    header = ["split", *(name for _, name in columns), "openness", "known / unknown"]
    if "per_split" in osr:
        rows = [[str(s["split"]), *(_pct(s[key]) for key, _ in columns), _pct(s["openness"]),
                 f"{s['n_known']} / {s['n_unknown']}"] for s in osr["per_split"]]
        rows.append(["mean ± std", *(_mean_std(osr["mean"][key]) for key, _ in columns), "", ""])
    else:
        rows = [["-", *(_pct(osr[key]) for key, _ in columns), _pct(osr["openness"]),
                 f"{osr['n_known']} / {osr['n_unknown']}"]]
    lines += [*_table(header, rows), "", "All values in %. Knowns are the positives.", ""]
    return lines + _figures(["plots/roc_osr.png", "plots/hist_osr.png"], figures) + [""]


def _closed_section(closed: dict) -> list[str]:
    lines = ["## Closed-set accuracy (top-k classifier, known test images)", "", _settings(closed["settings"]), ""]
    if "per_split" in closed:
        rows = [[str(s["split"]), _pct(s["closed_acc"]), str(s["n"])] for s in closed["per_split"]]
        rows.append(["mean ± std", _mean_std(closed["mean"]["closed_acc"]), ""])
    else:
        rows = [["-", _pct(closed["closed_acc"]), str(closed["n"])]]
    return lines + _table(["split", "accuracy (%)", "images"], rows) + [""]


def _ood_section(ood: dict, figures: set[str]) -> list[str]:
    first = next(iter(ood.values()))
    lines = ["## Out-of-distribution detection (known test images in, out-set out)", "",
             _settings(first["settings"]), ""]
    rows = []
    for name, result in ood.items():
        if "per_split" in result:
            rows.append([name, *(_mean_std(result["mean"][key]) for key, _ in OOD_COLUMNS), "mean ± std over splits"])
        else:
            rows.append([name, *(_pct(result[key]) for key, _ in OOD_COLUMNS), f"{result['n_in']} / {result['n_out']}"])
    lines += [*_table(["out-set", *(name for _, name in OOD_COLUMNS), "in / out"], rows), "",
              "All values in %. In-distribution images are the positives (ARPL's conventions; see "
              "fastgradmix.evaluation.metrics.ood_metrics).", ""]
    return lines + _figures(["plots/roc_ood.png", "plots/hist_ood.png"], figures) + [""]


def _corruption_section(corruption: dict, compare: dict | None, figures: set[str]) -> list[str]:
    source = corruption["source"]
    lines = ["## Corruption robustness", "", _settings(corruption["settings"]), "",
             f"Corruptions: {source}; table {corruption['table']}; clean accuracy "
             f"{_pct(corruption['clean_acc'])} % on {corruption['n']} known test images. "
             "D(c, s) = clean accuracy - accuracy under corruption c at severity s, in percentage points.", ""]
    severities = corruption["severities"]
    header = ["corruption", *(f"s{s}" for s in severities), "mean"]
    rows = [[name.replace("_", " "), *(f"{100 * d:.2f}" for d in corruption["drop"][name]),
             f"{100 * corruption['mean_drop'][name]:.2f}"] for name in corruption["drop"]]
    rows.append(["**all types**", *("" for _ in severities), f"**{100 * corruption['overall_mean_drop']:.2f}**"])
    lines += [*_table(header, rows), ""]
    lines += _severity_table(corruption, compare["corruption"] if compare is not None else None,
                             compare["aug"] if compare is not None else "")
    if compare is not None:
        other = compare["corruption"]
        lines += [f"### Compared with {compare['run']} (aug {compare['aug']})", "",
                  *_table(["corruption", f"this run ({compare['this_aug']})", f"other ({compare['aug']})",
                           "difference"],
                          [[name.replace("_", " "), f"{100 * corruption['mean_drop'][name]:.2f}",
                            f"{100 * other['mean_drop'][name]:.2f}",
                            f"{100 * (corruption['mean_drop'][name] - other['mean_drop'][name]):+.2f}"]
                           for name in corruption["mean_drop"] if name in other["mean_drop"]]
                          + [["clean accuracy (%)", _pct(corruption["clean_acc"]), _pct(other["clean_acc"]), ""],
                             ["**mean drop**", f"{100 * corruption['overall_mean_drop']:.2f}",
                              f"{100 * other['overall_mean_drop']:.2f}",
                              f"{100 * (corruption['overall_mean_drop'] - other['overall_mean_drop']):+.2f}"]]),
                  "", "Mean accuracy drops in percentage points (lower = more robust).", ""]
    return lines + _figures(["plots/corruption.png"], figures) + [""]


def _severity_table(corruption: dict, other: dict | None, other_aug: str) -> list[str]:
    """The paper's Table 5: the accuracy drop per severity (mean over the corruption types), then the mean."""
    def per_severity(result: dict) -> list[float]:
        if "severity_mean_drop" in result:
            return result["severity_mean_drop"]
        drops = list(result["drop"].values())  # an evaluation from before it was recorded: per type, per severity
        return [sum(d[i] for d in drops) / len(drops) for i in range(len(result["severities"]))]

    columns = [("drop (this run)", per_severity(corruption), corruption["overall_mean_drop"])]
    if other is not None and other.get("severities") == corruption["severities"]:
        columns.append((f"drop (other, {other_aug})", per_severity(other), other["overall_mean_drop"]))
    rows = [[str(s), *(f"{100 * values[i]:.2f}" for _, values, _ in columns)]
            for i, s in enumerate(corruption["severities"])]
    rows.append(["mean", *(f"{100 * mean:.2f}" for _, _, mean in columns)])
    return ["Accuracy drop per severity, mean over the corruption types (percentage points; the paper's Table 5):",
            "", *_table(["severity", *(name for name, _, _ in columns)], rows), ""]


def _linear_section(linear: dict, figures: set[str]) -> list[str]:
    lines = ["## Linear evaluation (frozen features, known test images)", "", _settings(linear["settings"]), ""]
    if "per_split" in linear:
        rows = [[str(s["split"]), _pct(s["top1"]), _pct(s["top5"]), _pct(s["train_top1"]), f"{s['n_train']} / "
                 f"{s['n_test']}"] for s in linear["per_split"]]
        rows.append(["mean ± std", _mean_std(linear["mean"]["top1"]), _mean_std(linear["mean"]["top5"]), "", ""])
        curve = linear["curve_mean"]
        recipe = linear["per_split"][0]["recipe"]
    else:
        rows = [["-", _pct(linear["top1"]), _pct(linear["top5"]), _pct(linear["train_top1"]),
                 f"{linear['n_train']} / {linear['n_test']}"]]
        curve, recipe = linear["curve"], linear["recipe"]
    lines += [*_table(["split", "top-1 (%)", "top-5 (%)", "train top-1 (%)", "train / test images"], rows), "",
              f"Features: the {linear['features']}'s (frozen, un-augmented test views). Classifier: multinomial "
              f"logistic regression on standardised features, L2 {recipe['weight_decay']:g} on the weights, L-BFGS "
              f"(at most {recipe['max_iter']} iterations), no seed.", ""]
    if len(curve) > 1:
        lines += ["Over the checkpoints (`--save-every`" + (", mean over splits" if "per_split" in linear else "")
                  + "):", "", *_table(["epoch", "top-1 (%)", "top-5 (%)"],
                                      [[str(p["epoch"]), _pct(p["top1"]), _pct(p["top5"])] for p in curve]), ""]
    return lines + _figures(["plots/linear_curve.png"], figures) + [""]


def _diversity_section(diversity: dict, compare: dict | None, figures: set[str]) -> list[str]:
    lines = ["## Feature diversity", "", _settings(diversity["settings"]), ""]

    def dimension(result: dict, key: str) -> str:
        if "mean" in result:
            stat = result["mean"][key]
            return f"{stat['mean']:.2f} ± {stat['std']:.2f}"
        return f"{result[key]:.2f}"

    columns = [("this run", diversity)]
    if compare is not None and "diversity" in compare:
        columns = [(f"this run ({compare['this_aug']})", diversity),
                   (f"{compare['run']} ({compare['aug']})", compare["diversity"])]
    header = ["", *(name for name, _ in columns)]
    rows = [["intrinsic dimension, encoder features", *(dimension(r, "twonn_encoder") for _, r in columns)],
            ["intrinsic dimension, head features", *(dimension(r, "twonn_head") for _, r in columns)]]
    rows += [[f"S_M({tau:.1e}) (%)", *(f"{100 * r['activated_area'][i]:.2f}" for _, r in columns)]
             for i, tau in enumerate(diversity["thresholds"])]
    if diversity.get("id_features") == "train-per-class":
        id_text = ("TwoNN (Facco et al. 2017) of each known class's training images' features on its own, averaged "
                   "over the classes (the published code's Table 1)")
    else:
        id_text = "TwoNN (Facco et al. 2017) of the known test images' features, all classes together"
    if diversity.get("area_maps", "normalized") == "raw":
        maps_text = (f"the raw maps M = ReLU(sum_c ReLU(G_c) A_c), not normalised, at the CAM layer's resolution "
                     f"({diversity.get('map_size') or diversity['cam_layers']}), as the paper's eq. 7")
    else:
        maps_text = (f"maps at {diversity['cam_layers']} normalised to a maximum of 1 per layer and upsampled to "
                     "the input size (--area-maps normalized)")
    lines += [*_table(header, rows), "",
              f"Intrinsic dimension: {id_text}. Activated area S_M(tau): share of LayerCAM map pixels above tau, "
              f"{maps_text}; the gradient is that of the image's open-set score (its best known class's top-k "
              "similarity sum); averaged over the known test images"
              + (" and the splits" if "per_split" in diversity else "") + ".", ""]
    return lines + _figures(["plots/activated_area.png", "plots/cam_grid.png"], figures) + [""]


def render(run_dir: Path, results: dict, figures: set[str]) -> str:
    """The markdown of ``results`` (a results.json with an "evaluation" key); ``figures`` = existing plot paths."""
    evaluation = results["evaluation"]
    context = evaluation.get("run", {})
    lines = [f"# Evaluation of {run_dir}", ""]
    facts = [f"protocol {context.get('protocol', results.get('protocol', '?'))}"]
    if "splits" in context:
        facts.append(f"splits {', '.join(str(s) for s in context['splits'])}")
    elif "split" in context:
        facts.append(f"split {context['split']}")
    facts += [f"method {context.get('method', results.get('method', '?'))}",
              f"aug {context.get('aug', results.get('aug', '?'))}",
              f"{context.get('epochs', '?')} epochs"]
    lines += [", ".join(facts) + ".", ""]
    if "osr" in evaluation:
        lines += _osr_section(evaluation["osr"], figures)
    if "closed" in evaluation:
        lines += _closed_section(evaluation["closed"])
    if evaluation.get("ood"):
        lines += _ood_section(evaluation["ood"], figures)
    compare = evaluation.get("compare")
    if "corruption" in evaluation:
        lines += _corruption_section(evaluation["corruption"],
                                     compare if compare and "corruption" in compare else None, figures)
    if "linear" in evaluation:
        lines += _linear_section(evaluation["linear"], figures)
    if "diversity" in evaluation:
        lines += _diversity_section(evaluation["diversity"], compare, figures)
    if evaluation.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {task}: {why}" for task, why in evaluation["skipped"].items()] + [""]
    return "\n".join(lines)
