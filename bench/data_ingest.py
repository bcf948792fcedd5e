"""Benchmark: transcription of recorded conversations for `plexray data ingest` (Silero VAD + the embedded
PocketSphinx ASR on both channels), a plain loop vs Ray Data with 1 and 2 actors, same run.

The recordings are generated conversations (the embedded dialogue backend, espeak-ng voices, natural
turn timing: `synthesize_item`), written as stereo wavs with an index, so the Ray runs do what `data
ingest` does: read each file in a task, VAD + ASR per channel in the actor pool, one transcript file per
conversation. Three ways, interleaved with --repeats, best wall time of each:
  (b) `ChannelTranscriber` called in this process on the conversations one batch at a time (no Ray;
      the files read here first, not timed): the baseline;
  (a) `transcribe_recordings` (run.py's stage 1) with data.ingest.num_actors 1 and 2.
Figures: hours of conversation transcribed (both channels of each) per hour of wall time, and per
actor-hour (wall x actors: the compute a cluster pays for). Ray's times include starting the actors
and loading each one's recogniser. Ray gets one logical CPU more than the machine's cores (see main).
Prints one JSON object.

    flock /tmp/plexray-heavy.lock .venv/bin/python bench/data_ingest.py [--conversations 6] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import sphn

from plexray.config import load_config
from plexray.data.ingest.index import read_index
from plexray.data.ingest.run import transcribe_recordings
from plexray.data.ingest.transcribe import TRANSCRIPTS_DIR, ChannelTranscriber, recording_for_asr
from plexray.data.personas import load_library
from plexray.data.plan import plan_conversations
from plexray.data.stages import rows_to_batch, synthesize_item
from plexray.model.prompt import SAMPLE_RATE
from plexray.settings import PlexrayConfig


def write_recordings(config, folder: Path) -> tuple[Path, float]:
    """Generated conversations as stereo wavs (agent left) and their index; returns (index, conversation seconds)."""
    library = load_library()
    folder.mkdir(parents=True)
    lines, seconds = [], 0.0
    for item in plan_conversations(config.data, library):
        for row in synthesize_item(vars(item), config.data, library, folder / "rejects"):
            path = folder / f"{row['id']}.wav"
            sphn.write_wav(str(path), np.stack([row["agent_audio"], row["user_audio"]]), SAMPLE_RATE)
            lines.append(json.dumps({"stereo": path.name, "agent_channel": "left", "system_prompt": "bench"}))
            seconds += row["agent_audio"].size / SAMPLE_RATE
    index = folder / "index.jsonl"
    index.write_text("\n".join(lines) + "\n")
    return index, seconds


def rate(audio_s: float, wall_s: float, actors: int) -> dict:
    return {"wall_s": round(wall_s, 2), "audio_h_per_wall_h": round(audio_s / wall_s, 2),
            "audio_h_per_actor_h": round(audio_s / (wall_s * actors), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2, help="conversations per actor batch")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions; the best of each counts")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="plexray-bench-ingest-"))
    out = work / "out"
    config = load_config(PlexrayConfig, None, [
        "data.dialogue.min_turns=6", "data.dialogue.max_turns=8", "data.speech.max_duration_s=30",
        f"data.max_conversations={args.conversations}", f"data.ingest.batch_size={args.batch_size}",
        f"data.output_dir={out}"])
    index, audio_s = write_recordings(config, work / "recordings")
    _, items = read_index(index)
    recordings = [row for item in items for row in recording_for_asr(item, config.data.ingest.max_duration_s, out)]
    assert len(recordings) == len(items)

    import ray

    # one logical CPU more than the cores: 2 actors of 1 CPU each on a 2-core machine would leave no CPU for
    # the read tasks that feed them, and Ray Data would wait for one forever
    ray.init(num_cpus=os.cpu_count() + 1, include_dashboard=False, log_to_driver=False)
    walls: dict[str, list[float]] = {"plain_loop": [], "ray_1_actor": [], "ray_2_actors": []}
    for _ in range(args.repeats):
        shutil.rmtree(out / TRANSCRIPTS_DIR, ignore_errors=True)
        started = time.perf_counter()
        transcriber = ChannelTranscriber(config.data.ingest, str(out))
        done = sum(len(transcriber(rows_to_batch(recordings[start:start + args.batch_size]))["id"])
                   for start in range(0, len(recordings), args.batch_size))
        walls["plain_loop"].append(time.perf_counter() - started)
        assert done == len(items)
        for actors, name in ((1, "ray_1_actor"), (2, "ray_2_actors")):
            shutil.rmtree(out / TRANSCRIPTS_DIR, ignore_errors=True)
            data = config.data.model_copy(update={"ingest": config.data.ingest.model_copy(update={"num_actors": actors})})
            started = time.perf_counter()
            assert transcribe_recordings(items, data, out) == len(items)
            walls[name].append(time.perf_counter() - started)
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)

    results = {name: rate(audio_s, min(walls[name]), actors)
               for name, actors in (("plain_loop", 1), ("ray_1_actor", 1), ("ray_2_actors", 2))}
    print(json.dumps({
        "asr": "pocketsphinx (embedded) on Silero VAD segments, both channels", "cpu_cores": os.cpu_count(),
        "conversations": len(items), "conversation_audio_s": round(audio_s, 1), "batch_size": args.batch_size,
        "all_wall_s": {name: [round(w, 2) for w in values] for name, values in walls.items()},
        **results,
        "ratio_ray_1_actor_vs_plain": round(results["ray_1_actor"]["audio_h_per_wall_h"]
                                            / results["plain_loop"]["audio_h_per_wall_h"], 3),
        "ratio_ray_2_vs_1_actor": round(results["ray_2_actors"]["audio_h_per_wall_h"]
                                        / results["ray_1_actor"]["audio_h_per_wall_h"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
