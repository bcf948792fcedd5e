"""Benchmark: Mimi encoding of generated conversations, Ray Data actors vs a plain loop, same run.

The same conversations (synthesised once, up front) are encoded by the pipeline's encoder stage
(`ConversationEncoder`: both channels and the voice prompt, batched, aligned, laid out as rows):
  (b) in a plain single-process loop (one torch thread), the baseline;
  (a) by Ray Data `map_batches` with 1 actor and with 2 actors (one torch thread each).
The codec is the full-size Mimi architecture (79M parameters) with random weights and randomised
codebooks, written as a checkpoint beside the demo LM so the actors load it the normal way.
Times include loading the codec (each actor loads its own). With --repeats N the three are run
N times, interleaved, and the best (least disturbed) wall time of each counts: on a shared machine
other load only ever slows a run down. Prints one JSON object.

    .venv/bin/python bench/data_pipeline.py [--conversations 8] [--batch-size 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch

from plexray.config import load_config
from plexray.data.personas import load_library
from plexray.data.plan import plan_conversations
from plexray.data.stages import ConversationEncoder, rows_to_batch, synthesize_item
from plexray.model import architectures, ensure_demo_checkpoint, reference
from plexray.model.prompt import SAMPLE_RATE
from plexray.settings import PlexrayConfig


def full_mimi_checkpoint(directory: Path, seed: int = 0) -> Path:
    """The demo checkpoint with its Mimi replaced by the full-size architecture (random weights)."""
    from moshi.models import loaders

    demo = ensure_demo_checkpoint(Path(tempfile.gettempdir()) / "plexray-bench-demo")
    shutil.copytree(demo, directory)
    torch.manual_seed(seed)
    mimi = loaders.get_mimi(None, architectures.full_mimi_config(), device="cpu",
                            num_codebooks=architectures.NUM_AUDIO_CODEBOOKS)
    with torch.no_grad():  # fresh codebooks are all zero (every frame -> code 0): draw them at random
        for rvq in (mimi.quantizer.rvq_first, mimi.quantizer.rvq_rest):
            for layer in rvq.vq.layers:
                codebook = layer._codebook
                codebook.embedding_sum.normal_()
                codebook.cluster_usage.fill_(1.0)
                codebook._initialized.fill_(1.0)
    safetensors.torch.save_file(mimi.state_dict(), str(directory / reference.MIMI_FILE))
    metadata = json.loads((directory / "plexray.json").read_text())
    metadata["mimi_config"] = architectures.full_mimi_config()
    metadata.pop("prompt_codes", None)  # derived from this Mimi at load
    (directory / "plexray.json").write_text(json.dumps(metadata))
    return directory


def rate(conversations: int, audio_s: float, wall_s: float) -> dict:
    return {"wall_s": round(wall_s, 2), "conversations_per_min": round(conversations / wall_s * 60, 2),
            "audio_s_encoded_per_s": round(audio_s / wall_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-duration", type=float, default=12.0, help="seconds per conversation")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions; the best of each counts")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="plexray-bench-"))
    checkpoint = full_mimi_checkpoint(work / "checkpoint")
    config = load_config(PlexrayConfig, None, [
        f"model.checkpoint={checkpoint}", f"data.output_dir={work / 'out'}",
        "data.dialogue.min_turns=4", "data.dialogue.max_turns=6", f"data.speech.max_duration_s={args.max_duration}",
        f"data.encode.batch_size={args.batch_size}", "data.encode.torch_threads=1",
        f"data.max_conversations={args.conversations}"])
    library = load_library()
    items = plan_conversations(config.data, library)

    started = time.perf_counter()
    rows = [row for item in items for row in synthesize_item(vars(item), config.data, library, work / "out")]
    synth_s = time.perf_counter() - started
    audio_s = sum(len(row[c]) for row in rows for c in ("agent_audio", "user_audio", "voice_audio")) / SAMPLE_RATE
    conversation_s = sum(len(row["agent_audio"]) for row in rows) / SAMPLE_RATE

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    walls: dict[str, list[float]] = {"plain_loop": [], "ray_1_actor": [], "ray_2_actors": []}
    load_s = 0.0
    for _ in range(args.repeats):
        # (b) the plain loop, one thread: the baseline (and Mimi's real-time factor)
        torch.set_num_threads(1)
        started = time.perf_counter()
        encoder = ConversationEncoder(config.model, config.data, str(work / "out"))
        load_s = time.perf_counter() - started
        plain_rows = 0
        for start in range(0, len(rows), args.batch_size):
            plain_rows += encoder(rows_to_batch(rows[start:start + args.batch_size])).num_rows
        walls["plain_loop"].append(time.perf_counter() - started)
        assert plain_rows == len(rows)
        del encoder
        # (a) Ray Data with 1 and 2 encoder actors
        for actors, name in ((1, "ray_1_actor"), (2, "ray_2_actors")):
            dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
            started = time.perf_counter()
            encoded = dataset.map_batches(
                ConversationEncoder, fn_constructor_kwargs={"model": config.model, "config": config.data,
                                                            "output_dir": str(work / "out")},
                batch_size=args.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1).materialize()
            walls[name].append(time.perf_counter() - started)
            assert encoded.count() == len(rows)
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)

    plain_s = min(walls["plain_loop"])
    ray_results = {name: rate(len(rows), audio_s, min(walls[name])) for name in ("ray_1_actor", "ray_2_actors")}
    plain = rate(len(rows), audio_s, plain_s)
    one, two = ray_results["ray_1_actor"], ray_results["ray_2_actors"]
    print(json.dumps({
        "mimi": "full-size architecture, random weights", "cpu_cores": os.cpu_count(),
        "conversations": len(rows), "conversation_audio_s": round(conversation_s, 1),
        "audio_s_encoded": round(audio_s, 1), "batch_size": args.batch_size,
        "synthesis_wall_s": round(synth_s, 2), "repeats": args.repeats,
        "all_wall_s": {name: [round(w, 2) for w in values] for name, values in walls.items()},
        "plain_loop": {**plain, "codec_load_s": round(load_s, 2)},
        **ray_results,
        "mimi_real_time_factor_1_thread": round((plain_s - load_s) / audio_s, 3),
        "ratio_ray_1_actor_vs_plain": round(one["audio_s_encoded_per_s"] / plain["audio_s_encoded_per_s"], 3),
        "ratio_ray_2_vs_1_actor": round(two["audio_s_encoded_per_s"] / one["audio_s_encoded_per_s"], 3),
        "targets": {"ray_1_actor_within_10pct_of_plain": one["audio_s_encoded_per_s"] >= 0.9 * plain["audio_s_encoded_per_s"],
                    "ray_2_actors_at_least_1_8x": two["audio_s_encoded_per_s"] >= 1.8 * one["audio_s_encoded_per_s"]},
    }, indent=2))


if __name__ == "__main__":
    main()
