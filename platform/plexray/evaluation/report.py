"""The behavioural report: every metric per task per checkpoint with its count and confidence interval,
base vs tuned differences with the significant ones marked, per-task plots and a short Markdown summary.

A metric is any number a conversation's scores carry (score_conversation's per-task keys, the judge's
`judge_score`); None (not measurable in that conversation, e.g. a latency when the agent never spoke)
is left out of its mean and counted out of `count`.
"""

from __future__ import annotations

import json
import math
import typing as tp
from pathlib import Path

from plexray.evaluation.statistics import compare, estimate
from plexray.evaluation.testset import TASKS

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOTS_DIR = "plots"
# Per-conversation 0/1 outcomes, estimated as rates (Wilson's interval); every other metric is a quantity
# (bootstrap), even where all its values happen to be 0 or 1 (no speech: 0 s; one backchannel).
RATES = ("take_over", "take_over_vad", "yielded")
LOWER_IS_BETTER = ("pause_handling.take_over", "pause_handling.take_over_vad", "latency_s", "stop_latency_s",
                   "backchannel_take_overs", "user_backchannel.yielded")


def metric_values(records: tp.Iterable[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """task -> metric -> {conversation id: value}, from the records that were scored."""
    values: dict[str, dict[str, dict[str, float]]] = {}
    for record in records:
        for name, value in (record["scores"] or {}).items():
            if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):  # not None, lists, text
                values.setdefault(record["task"], {}).setdefault(name, {})[record["id"]] = float(value)
    return values


def summarize(records: dict[str, list[dict]], comparison: tuple[str, str] | None, context: dict) -> dict:
    """The report as a dict: `records` per checkpoint label; `comparison` (base label, tuned label) or None;
    `context`: what was run (test set, checkpoints, ASR backend, judge status), copied in."""
    values = {label: metric_values(label_records) for label, label_records in records.items()}
    results = {label: {task: {name: _estimate(name, by_id) for name, by_id in sorted(metrics.items())}
                       for task, metrics in _in_task_order(per_task)}
               for label, per_task in values.items()}
    report = dict(context, results=results, comparison=None, failures={
        label: [{"id": r["id"], "task": r["task"], "error": r["error"]} for r in label_records if r["error"]]
        for label, label_records in records.items()})
    report["scored"] = {label: sum(r["error"] is None for r in label_records)
                        for label, label_records in records.items()}
    if comparison is not None:
        base, tuned = comparison
        differences: dict[str, dict[str, dict]] = {}
        for task, metrics in _in_task_order(values[base]):
            for name, base_by_id in sorted(metrics.items()):
                tuned_by_id = values[tuned].get(task, {}).get(name, {})
                if base_by_id and tuned_by_id:
                    difference = compare(list(base_by_id.values()), list(tuned_by_id.values()))
                    differences.setdefault(task, {})[name] = {
                        "delta": difference.delta, "p_value": difference.p_value,
                        "significant": bool(difference.significant), "better": _better(task, name, difference.delta)}
        report["comparison"] = {"base": base, "tuned": tuned, "differences": differences}
    return report


def write_report(report: dict, records: dict[str, list[dict]], output_dir: Path) -> dict[str, Path]:
    """report.json, report.md and plots/<task>.png in `output_dir`; returns their paths.

    report.json is written last: its presence means the report is complete (evaluate_behaviour_once)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / REPORT_JSON, "markdown": output_dir / REPORT_MD}
    plots = plot_tasks({label: metric_values(label_records) for label, label_records in records.items()},
                       output_dir / PLOTS_DIR)
    paths["markdown"].write_text(markdown(report, {task: path.relative_to(output_dir) for task, path in plots.items()}))
    paths["json"].write_text(json.dumps(report, indent=2))
    return paths


def plot_tasks(values: dict[str, dict[str, dict[str, dict[str, float]]]], directory: Path) -> dict[str, Path]:
    """One figure per task: a histogram per checkpoint for each time metric (`..._s`), the means with
    their confidence intervals side by side for every other metric (take-over rates base vs tuned)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    labels = list(values)
    paths = {}
    for task in TASKS:
        names = sorted({name for label in labels for name in values[label].get(task, {})})
        if not names:
            continue
        figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
        for axis, name in zip(axes[0], names):
            per_label = {label: list(values[label].get(task, {}).get(name, {}).values()) for label in labels}
            if name.endswith("_s"):
                axis.hist([per_label[label] for label in labels], label=labels, bins=10)
                axis.set_xlabel("seconds")
                axis.set_ylabel("conversations")
                axis.legend(fontsize=8)
            else:
                estimates = [estimate(per_label[label], binary=name in RATES) if per_label[label] else None
                             for label in labels]
                means = [e.mean if e else 0.0 for e in estimates]
                errors = [[e.mean - e.low if e else 0.0 for e in estimates],
                          [e.high - e.mean if e else 0.0 for e in estimates]]
                axis.bar(labels, means, yerr=errors, capsize=4, color=[f"C{i}" for i in range(len(labels))])
            axis.set_title(name, fontsize=9)
        figure.suptitle(task)
        figure.tight_layout()
        paths[task] = directory / f"{task}.png"
        figure.savefig(paths[task], dpi=80)
        plt.close(figure)
    return paths


def markdown(report: dict, plots: dict[str, Path]) -> str:
    """The summary a person reads first: what was measured and how, then one table per task."""
    labels = list(report["results"])
    comparison = report["comparison"]
    lines = ["# Behavioural evaluation", "",
             f"Checkpoints: {', '.join(f'`{label}` = {ref}' for label, ref in report['checkpoints'].items())}.",
             f"Test set: {report['test_set']['conversations']} conversations ({report['test_set']['directory']}); "
             f"sessions run through the serving engine, B = {report['batch_size']} per engine.",
             f"Words and their times from ASR backend **{report['asr_backend']}**: every figure below depends on "
             "it (take-over rates move by up to ~23 points between ASR backends); `take_over_vad` is the same "
             "measure from voice activity alone.",
             _voice_line(report),
             f"Role answers: {report['judge']}.", "",
             "Mean [95% interval] (conversations measured) per metric; "
             + (f"Δ = {comparison['tuned']} - {comparison['base']}, **bold** where significant (p < 0.05)."
                if comparison else "one checkpoint, no comparison."), ""]
    for task in TASKS:
        names = sorted({name for label in labels for name in report["results"][label].get(task, {})})
        if not names:
            continue
        lines += [f"## {task}", "", "| metric | " + " | ".join(labels) + (" | Δ (p) |" if comparison else " |"),
                  "| --- " * (len(labels) + 1 + bool(comparison)) + "|"]
        for name in names:
            cells = [_cell(report["results"][label].get(task, {}).get(name)) for label in labels]
            if comparison:
                cells.append(_difference_cell(comparison["differences"].get(task, {}).get(name)))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if task in plots:
            lines += ["", f"![{task}]({plots[task]})"]
        lines.append("")
    failures = {label: failed for label, failed in report["failures"].items() if failed}
    lines += ["## Conversations", "",
              "Scored: " + ", ".join(f"{label} {count}" for label, count in report["scored"].items()) + ". "
              "Agent audio of every conversation: `<checkpoint>/audio/<id>.wav` (the user track: the test set's "
              "`audio/<id>.wav`); its text and scores: `<checkpoint>/conversations/<id>.json`.", ""]
    for label, failed in failures.items():
        lines.append(f"Failed in {label}: " + "; ".join(f"{f['id']}: {f['error']}" for f in failed))
    return "\n".join(lines) + "\n"


def _voice_line(report: dict) -> str:
    if not report.get("speaker_encoder"):
        return "Voice similarity: not measured (evaluation.speaker.backend: none)."
    line = (f"`voice_similarity`: cosine of speaker embeddings ({report['speaker_encoder']}) of the agent's speech "
            "and its voice prompt's sample, where the agent spoke for long enough.")
    if report["voices_without_sample"]:
        line += (f" Not measured for voice(s) {', '.join(report['voices_without_sample'])}: given as prefill (.pt) "
                 "only, with no .wav sample to compare with.")
    return line


def _estimate(name: str, by_id: dict[str, float]) -> dict:
    result = estimate(list(by_id.values()), binary=name in RATES)
    return {"mean": result.mean, "count": result.count, "low": result.low, "high": result.high}


def _in_task_order(per_task: dict[str, dict]) -> list[tuple[str, dict]]:
    return [(task, per_task[task]) for task in TASKS if task in per_task]


def _better(task: str, name: str, delta: float) -> str:
    """Which checkpoint the difference favours: 'tuned', 'base' or 'equal'."""
    if delta == 0:
        return "equal"
    lower_is_better = name in LOWER_IS_BETTER or f"{task}.{name}" in LOWER_IS_BETTER
    return "tuned" if (delta < 0) == lower_is_better else "base"


def _cell(result: dict | None) -> str:
    if result is None:
        return "-"
    return f"{result['mean']:.3g} [{result['low']:.3g}, {result['high']:.3g}] ({result['count']})"


def _difference_cell(difference: dict | None) -> str:
    if difference is None:
        return "-"
    text = f"{difference['delta']:+.3g} (p {difference['p_value']:.2g})"
    return f"**{text}, {difference['better']} better**" if difference["significant"] else text
