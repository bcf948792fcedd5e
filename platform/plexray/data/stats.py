"""The dataset's statistics report: numbers in stats.json, and histograms a person can look at."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plexray.data.config import TimingConfig
from plexray.data.quality import transcript_aligned_fraction
from plexray.data.shards import shard_files
from plexray.data.timing import offset_summary, reference_pdf
from plexray.model.prompt import FRAME_RATE

STATS_COLUMNS = ["id", "persona_id", "scenario_id", "num_frames", "prompt_end", "transcript"]
# Added to the rows later: shards written before then lack them, and read as 0.
ALIGNMENT_COUNT_COLUMNS = ["late_words", "dropped_text_tokens"]


def _read_small_columns(path: Path) -> pa.Table:
    table = pq.read_table(path, columns=STATS_COLUMNS + [name for name in ALIGNMENT_COUNT_COLUMNS
                                                         if name in pq.read_schema(path).names])
    for name in ALIGNMENT_COUNT_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.array(np.zeros(table.num_rows, np.int32)))
    return table


def read_index(output_dir: Path) -> pa.Table:
    """The small columns of every shard (no codes), one row per distinct id."""
    tables = [_read_small_columns(path) for path in shard_files(output_dir)]
    if not tables:
        return pa.table({name: [] for name in STATS_COLUMNS + ALIGNMENT_COUNT_COLUMNS})
    table = pa.concat_tables(tables)
    _, first = np.unique(np.asarray(table.column("id").to_pylist(), dtype=object), return_index=True)
    return table.take(pa.array(sorted(first)))


def _summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"count": int(array.size), "mean": float(array.mean()), "min": float(array.min()),
            "p50": float(np.median(array)), "max": float(array.max())}


def conversation_stats(table: pa.Table) -> dict:
    conversation_s, turns, gaps, overlaps, backchannels, barge_ins = [], [], [], 0, 0, 0
    words, interpolated_words, aligned_fractions = 0, 0, []
    for frames, prompt_end, transcript in zip(table.column("num_frames").to_pylist(),
                                              table.column("prompt_end").to_pylist(),
                                              table.column("transcript").to_pylist()):
        conversation_s.append((frames - prompt_end) / FRAME_RATE)
        entries = json.loads(transcript)
        main = [t for t in entries if t.get("kind", "turn") == "turn"]
        turns.append(len(main))
        backchannels += len(entries) - len(main)
        barge_ins += sum(bool(t.get("interrupted")) for t in main)
        words += sum(len(t.get("words", [])) for t in entries)
        interpolated_words += sum(t.get("interpolated_words", 0) for t in entries)  # absent before the aligner
        aligned_fractions.append(transcript_aligned_fraction(entries))
        for previous, current in zip(main, main[1:]):
            gap = current["start_s"] - previous["end_s"]
            gaps.append(gap)
            overlaps += gap < 0
    late_words = table.column("late_words").to_pylist()
    alignment = {"late_words": sum(late_words), "conversations_with_late_words": sum(count > 0 for count in late_words),
                 "dropped_text_tokens": sum(table.column("dropped_text_tokens").to_pylist()),
                 # words the aligner could not place (not in its dictionary, or a failed search): timed by interpolation
                 "words": words, "interpolated_words": interpolated_words}
    return {"conversation_seconds": _summary(conversation_s), "turns": _summary(turns), "gaps_s": _summary(gaps),
            "floor_transfer_offsets": offset_summary(gaps), "overlaps": overlaps, "barge_ins": barge_ins,
            "backchannels": backchannels, "alignment": alignment,
            # the quality gate's figure per conversation (data/quality.py): script words the aligner placed
            "speech_quality": {"aligned_fraction": _summary(aligned_fractions)},
            "hours_of_conversation": float(sum(conversation_s) / 3600),
            "_raw": {"durations": conversation_s, "turns": turns, "gaps": gaps, "aligned_fractions": aligned_fractions}}


def _plot_offsets(path: Path, offsets_s: list[float], timing: TimingConfig) -> None:
    """The dataset's floor-transfer offsets as a density beside the reference shape they were drawn from."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    offsets_ms = np.asarray(offsets_s, dtype=np.float64) * 1000
    if offsets_ms.size:  # a density of nothing divides by zero
        axis.hist(offsets_ms, bins=np.arange(-1000, 2050, 100), density=True, color="#4a7ab7", label="this dataset")
    grid = np.linspace(-1000, 2000, 301)
    axis.plot(grid, reference_pdf(timing, grid), color="#c0392b",
              label=f"reference (mu {timing.mu_ms:g}, sigma {timing.sigma_ms:g}, tau {timing.tau_ms:g} ms)")
    axis.axvspan(0, 200, color="#999999", alpha=0.2, label="0-200 ms")
    axis.set_xlabel("floor-transfer offset (ms, negative = overlap)")
    axis.set_ylabel("density")
    axis.set_title(f"speaker changes (n={len(offsets_s)})")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_report(output_dir: Path, table: pa.Table, timing: TimingConfig) -> dict:
    """stats/stats.json and stats/{durations,turns,gaps,aligned_fraction,offsets}.png; returns the stats without
    raw values.

    `timing` is the reference the offsets plot shows (the one the dataset's config drew from)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    stats = conversation_stats(table)
    raw = stats.pop("_raw")
    folder = output_dir / "stats"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stats.json").write_text(json.dumps(stats, indent=2))
    plots = {"durations": ("conversation length (s)", raw["durations"]),
             "turns": ("turns per conversation", raw["turns"]),
             "gaps": ("gap between turns (s, negative = overlap)", raw["gaps"]),
             "aligned_fraction": ("script words the aligner placed in the audio (quality gate)",
                                  raw["aligned_fractions"])}
    for name, (label, values) in plots.items():
        figure, axis = plt.subplots(figsize=(6, 3.5))
        axis.hist(values, bins=min(30, max(5, len(values))), color="#4a7ab7")
        axis.set_xlabel(label)
        axis.set_ylabel("count")
        axis.set_title(f"{name} (n={len(values)})")
        figure.tight_layout()
        figure.savefig(folder / f"{name}.png", dpi=90)
        plt.close(figure)
    _plot_offsets(folder / "offsets.png", raw["gaps"], timing)
    return stats
