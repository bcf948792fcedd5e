"""Benchmark: speech synthesis per TTS backend, and Mimi encoding of generated conversations, Ray Data
actors vs a plain loop, same run.

Synthesis: the turns of the planned conversations (each distinct text once, caches cleared) spoken by
  (s1) espeak-ng directly (`EspeakSynthesizer`), the baseline;
  (s2) the OpenAI-compatible endpoint backend (`EndpointSynthesizer`) against a loopback stand-in that
       speaks with the same espeak-ng voices (tests/speech_server.py, WAV at 24 kHz), so the difference is
       the endpoint path's own cost: HTTP, WAV encoding and decoding, retries' bookkeeping.
Both include forced alignment of every turn (the word times of every backend come from it); figures
are seconds of speech synthesized per second, one process, turns one after another.

The same conversations (synthesised once, up front) are encoded by the pipeline's encoder stage
(`ConversationEncoder`: both channels and the voice prompt, batched, aligned, laid out as rows):
  (b) in a plain single-process loop (one torch thread), the baseline;
  (a) by Ray Data `map_batches` with 1 actor and with 2 actors (one torch thread each).
The codec is the full-size Mimi architecture (79M parameters) with random weights and randomised
codebooks, written as a checkpoint beside the demo LM so the actors load it the normal way.
Times include loading the codec (each actor loads its own). With --repeats N the three are run
N times, interleaved, and the best (least disturbed) wall time of each counts: on a shared machine
other load only ever slows a run down. Prints one JSON object.

    .venv/bin/python bench/data_pipeline.py [--conversations 8] [--batch-size 2] [--repeats 2] [--synthesis-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch

from plexray.config import load_config
from plexray.data import tts
from plexray.data.config import SpeechEndpointConfig
from plexray.data.dialogue.embedded import EmbeddedBackend
from plexray.data.personas import Library, Voice, load_library
from plexray.data.plan import PlanItem, plan_conversations
from plexray.data.stages import ConversationEncoder, rows_to_batch, synthesize_item
from plexray.model import architectures, ensure_demo_checkpoint, reference
from plexray.model.prompt import SAMPLE_RATE
from plexray.settings import PlexrayConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))  # speech_server: the loopback speech endpoint the tests use

from speech_server import VOICES, SpeechServer  # noqa: E402


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


def turn_texts(items: list[PlanItem], library: Library, min_turns: int, max_turns: int) -> list[tuple[str, str]]:
    """Each distinct (turn text, speaker) of the planned conversations' dialogues, in plan order."""
    texts: dict[tuple[str, str], None] = {}
    for item in items:
        dialogue = EmbeddedBackend().write(library.personas[item.persona_id], library.scenarios[item.scenario_id],
                                           item.seed, min_turns, max_turns, "agent")
        texts.update({(turn.text, turn.speaker): None for turn in dialogue.turns})
    return list(texts)


# The stand-in endpoint's voice per speaker, and the same espeak-ng voice for the direct baseline.
ENDPOINT_VOICES = {"agent": "alex", "user": "barista"}
ESPEAK_VOICES = {speaker: Voice(variant=VOICES[name].variant, pitch=VOICES[name].pitch, rate=VOICES[name].speed)
                 for speaker, name in ENDPOINT_VOICES.items()}


def synthesis_seconds(texts: list[tuple[str, str]], speakers: dict[str, tts.SpeechSynthesizer]) -> tuple[float, float]:
    """(wall s, s of speech) to speak every text, caches of both backends cleared first."""
    tts._spoken.cache_clear()
    tts._endpoint_spoken.cache_clear()
    started = time.perf_counter()
    audio_s = sum(speakers[speaker].speak(text, ESPEAK_VOICES[speaker]).duration_s for text, speaker in texts)
    return time.perf_counter() - started, audio_s


def synthesis_benchmark(texts: list[tuple[str, str]], repeats: int) -> dict:
    """(s1) espeak-ng direct vs (s2) the endpoint backend on a loopback stand-in, interleaved; best wall of each."""
    tts._aligner()  # the aligner's model load, shared by both, is not synthesis
    walls: dict[str, list[float]] = {"espeak_direct": [], "endpoint_loopback": []}
    audio: dict[str, float] = {}
    with SpeechServer(wav_rate=SAMPLE_RATE) as server:
        endpoint = SpeechEndpointConfig(base_url=server.base_url, max_retries=0)
        backends = {"espeak_direct": {speaker: tts.EspeakSynthesizer() for speaker in ENDPOINT_VOICES},
                    "endpoint_loopback": {speaker: tts.EndpointSynthesizer(endpoint, name)
                                          for speaker, name in ENDPOINT_VOICES.items()}}
        for _ in range(repeats):
            for name, speakers in backends.items():
                wall_s, audio[name] = synthesis_seconds(texts, speakers)
                walls[name].append(wall_s)
    results = {name: {"wall_s": round(min(walls[name]), 2), "audio_s": round(audio[name], 1),
                      "audio_s_synthesized_per_s": round(audio[name] / min(walls[name]), 2)} for name in walls}
    return {"turns": len(texts), "all_wall_s": {name: [round(w, 2) for w in values] for name, values in walls.items()},
            **results, "ratio_endpoint_vs_espeak": round(results["endpoint_loopback"]["audio_s_synthesized_per_s"]
                                                         / results["espeak_direct"]["audio_s_synthesized_per_s"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-duration", type=float, default=12.0, help="seconds per conversation")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions; the best of each counts")
    parser.add_argument("--synthesis-only", action="store_true", help="only the synthesis figures (no Mimi)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="plexray-bench-"))
    data_settings = ["data.dialogue.min_turns=4", "data.dialogue.max_turns=6",
                     f"data.speech.max_duration_s={args.max_duration}", f"data.encode.batch_size={args.batch_size}",
                     "data.encode.torch_threads=1", f"data.max_conversations={args.conversations}",
                     f"data.output_dir={work / 'out'}"]
    library = load_library()
    data = load_config(PlexrayConfig, None, data_settings).data
    items = plan_conversations(data, library)
    synthesis = synthesis_benchmark(turn_texts(items, library, data.dialogue.min_turns, data.dialogue.max_turns),
                                    args.repeats)
    if args.synthesis_only:
        print(json.dumps({"cpu_cores": os.cpu_count(), "conversations": len(items), "synthesis": synthesis}, indent=2))
        shutil.rmtree(work, ignore_errors=True)
        return
    checkpoint = full_mimi_checkpoint(work / "checkpoint")
    config = load_config(PlexrayConfig, None, [f"model.checkpoint={checkpoint}", *data_settings])

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
        "synthesis_wall_s": round(synth_s, 2), "repeats": args.repeats, "synthesis": synthesis,
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
