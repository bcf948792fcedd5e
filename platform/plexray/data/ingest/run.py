"""`plexray data ingest INDEX`: the Ray shell around the ingest stages, resumable like `data generate`.

1. Transcribe (Ray Data): read each recording in a task -> VAD + ASR per channel in an actor pool
   (data.ingest.num_actors, GPU share num_gpus_per_actor) -> transcripts/<id>.json. Conversations
   already written, or transcribed before with the same ASR settings, are skipped.
2. Build and encode (the generation pipeline, data/pipeline.py): transcribed conversation -> gate,
   turns, prompts (conversation.py, Ray tasks) -> Mimi encoder actors -> shards -> manifest.json.
The manifest gains an `ingest` section: the ASR, the speech-ratio gate and the channels' speech ratios.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import typing as tp
from pathlib import Path

import numpy as np

from plexray.data.config import DataConfig
from plexray.data.dialogue.llm import ChatClient
from plexray.data.errors import DataError, LLMError
from plexray.data.ingest.conversation import recorded_conversation
from plexray.data.ingest.index import read_index
from plexray.data.ingest.transcribe import CHANNELS, ChannelTranscriber, read_transcript, recording_for_asr
from plexray.data.manifest import write_manifest
from plexray.data.pipeline import prepare, run_and_reconcile
from plexray.data.shards import written_ids

logger = logging.getLogger(__name__)


def check_prompt_source(items: tp.Sequence[dict], config: DataConfig) -> None:
    """Fail before any work when some conversation needs a back-annotated prompt and no LLM is configured."""
    unprompted = [item["id"] for item in items if not item["system_prompt"]]
    if not unprompted or config.ingest.default_system_prompt:
        return
    try:
        ChatClient(config.dialogue.llm)
    except LLMError as exc:
        raise DataError(f"{len(unprompted)} conversations (e.g. {unprompted[0]}) have no system_prompt in the index "
                        f"and would be back-annotated by the LLM, but {exc}; or give each a system_prompt in the "
                        "index, or set data.ingest.default_system_prompt") from None


def transcribe_recordings(items: tp.Sequence[dict], config: DataConfig, output_dir: Path) -> int:
    """Stage 1 on Ray Data: read (tasks) -> transcribe (actor pool); returns how many were transcribed."""
    import ray

    if not ray.is_initialized():
        ray.init()
    ingest = config.ingest
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    if ingest.num_actors * ingest.num_cpus_per_actor >= cluster_cpus:
        logger.warning("data.ingest.num_actors x num_cpus_per_actor = %g CPUs, and the cluster has %g now: unless it "
                       "scales up, no CPU is left for the tasks that read the recordings and the run waits forever",
                       ingest.num_actors * ingest.num_cpus_per_actor, cluster_cpus)
    dataset = ray.data.from_items(list(items), override_num_blocks=len(items))  # one read task per conversation
    dataset = dataset.flat_map(functools.partial(recording_for_asr, max_duration_s=ingest.max_duration_s,
                                                 output_dir=output_dir), num_cpus=1)
    dataset = dataset.map_batches(
        ChannelTranscriber,
        fn_constructor_kwargs={"config": ingest, "output_dir": str(output_dir)},
        batch_size=ingest.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=ingest.num_actors),
        num_cpus=ingest.num_cpus_per_actor,
        num_gpus=ingest.num_gpus_per_actor,
    )
    return sum(len(batch["id"]) for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"))


def _summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    array = np.asarray(values)
    return {"count": len(values), "min": float(array.min()), "p50": float(np.median(array)), "mean": float(array.mean())}


def _plot_speech_ratios(path: Path, ratios: dict[str, list[float]], threshold: float) -> None:
    """Both channels' speech ratios over every transcribed conversation, and the gate's threshold."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0.0, 1.0, 41)
    for channel, color in (("agent", "#4a7ab7"), ("user", "#e08a3c")):
        axis.hist(ratios[channel], bins=bins, alpha=0.6, color=color, label=f"{channel} (n={len(ratios[channel])})")
    axis.axvline(threshold, color="#c0392b", label=f"data.ingest.min_speech_ratio {threshold:g}")
    axis.set_xlabel("speech ratio of the channel (Silero VAD speech / duration)")
    axis.set_ylabel("conversations")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def ingest_section(output_dir: Path, plan_ids: list[str], config: DataConfig, transcribed_now: int) -> dict:
    """What the manifest records of ingest: the ASR, the gate, and the channels' speech ratios (of the written
    conversations; stats/speech_ratio.png shows every transcribed one's against the threshold)."""
    records = {item_id: record for item_id in plan_ids
               if (record := read_transcript(output_dir, item_id, config.ingest.asr)) is not None}
    written = [records[item_id] for item_id in sorted(written_ids(output_dir)) if item_id in records]
    (output_dir / "stats").mkdir(exist_ok=True)
    _plot_speech_ratios(output_dir / "stats" / "speech_ratio.png",
                        {channel: [record["channels"][channel]["speech_ratio"] for record in records.values()]
                         for channel in CHANNELS}, config.ingest.min_speech_ratio)
    return {"asr": config.ingest.asr.model_dump(mode="json"),
            "asr_names": sorted({record["asr_name"] for record in written}),
            "transcribed": len(records), "transcribed_this_run": transcribed_now,
            "min_speech_ratio": config.ingest.min_speech_ratio,
            "speech_ratio": {channel: _summary([record["channels"][channel]["speech_ratio"] for record in written])
                             for channel in CHANNELS},
            "seconds_cut": sum(record["cut_s"] for record in written),
            "max_duration_s": config.ingest.max_duration_s}


def _add_to_manifest(output_dir: Path, section: dict) -> dict:
    path = output_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["ingest"] = section
    temporary = output_dir / ".manifest.json.tmp"
    temporary.write_text(json.dumps(manifest, indent=2))
    os.replace(temporary, path)
    return manifest


def ingest(index_file: Path, config) -> dict:
    """Ingest (or resume ingesting) the recordings `index_file` lists into data.output_dir; returns the manifest.

    Raises DataError for a bad index or missing LLM before any work, and, after writing the manifest,
    when the run failed or rejected more than data.max_reject_fraction (naming the dominant cause).
    """
    plan, items = read_index(index_file)
    plan_ids = [item.id for item in plan]
    check_prompt_source(items, config.data)
    config, output_dir = prepare(config)
    asr = config.data.ingest.asr
    written = written_ids(output_dir)
    todo = [item for item in items
            if item["id"] not in written and read_transcript(output_dir, item["id"], asr) is None]
    try:
        transcribed = transcribe_recordings(todo, config.data, output_dir) if todo else 0
    except Exception as exc:  # record what is done (the transcripts so far are kept): the next run resumes
        run = {"skipped_existing": len(items) - len(todo), "attempted": len(todo),
               "error": f"transcribe: {type(exc).__name__}: {exc}"}
        manifest = write_manifest(output_dir, plan, config.model_dump(mode="json"), run)
        _add_to_manifest(output_dir, ingest_section(output_dir, plan_ids, config.data, 0))
        raise DataError(f"transcription failed ({run['error']}); {manifest['written']} of {manifest['planned']} "
                        "conversations are written and every finished transcript is kept; run again to resume"
                        ) from exc
    ready = [item for item in items if item["id"] in written or read_transcript(output_dir, item["id"], asr) is not None]
    stage = functools.partial(recorded_conversation, config=config.data, output_dir=output_dir)
    try:
        run_and_reconcile(plan, ready, stage, config, output_dir)
    except DataError:  # the manifest is written (a failed run, or too many rejects): it gets its ingest section too
        _add_to_manifest(output_dir, ingest_section(output_dir, plan_ids, config.data, transcribed))
        raise
    return _add_to_manifest(output_dir, ingest_section(output_dir, plan_ids, config.data, transcribed))
