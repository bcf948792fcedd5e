"""Export to and import from Kyutai moshi-finetune's dataset layout.

Layout: an index `<name>.jsonl` with one `{"path": "<wav>", "duration": seconds}` per line
(paths relative to the index); each path is a stereo wav (left = the main speaker, the agent;
right = the user) with a `.json` beside it: `{"alignments": [[word, [start_s, end_s], speaker],
...]}` where speaker is SPEAKER_MAIN for the agent. plexray adds an optional `system_prompt`.

Export decodes the shards' Mimi codes (the prompt phase left out), so it is as lossy as Mimi.
Import turns real recordings into training rows through the same encoder stage as generation;
an unreadable or wrong-shaped recording is quarantined in the rejects table with its reason.
"""

from __future__ import annotations

import functools
import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import sphn
import torch

from plexray.data.codec import load_codec
from plexray.data.errors import DataError
from plexray.data.pipeline import prepare, run_and_reconcile
from plexray.data.plan import PlanItem
from plexray.data.rejects import clear_reject, write_reject
from plexray.data.shards import shard_files
from plexray.model.architectures import NUM_AUDIO_CODEBOOKS
from plexray.model.config import ModelConfig
from plexray.model.prompt import SAMPLE_RATE, wrap_system_prompt

MAIN_SPEAKER = "SPEAKER_MAIN"
OTHER_SPEAKER = "SPEAKER_OTHER"
IMPORT_PERSONA = "imported"
TURN_BREAK_S = 1.0  # consecutive words of one speaker closer than this form one turn


# ---- export -------------------------------------------------------------------------------------

def export_dataset(dataset_dir: Path, target_dir: Path, model: ModelConfig) -> dict:
    """Every row of the shards -> stereo wav + alignment json, and `dataset.jsonl` listing them."""
    codec = load_codec(model)
    (target_dir / "audio").mkdir(parents=True, exist_ok=True)
    entries = []
    for shard in shard_files(dataset_dir):
        table = pq.read_table(shard, columns=["id", "codes", "prompt_end", "transcript", "system_prompt"])
        for row in table.to_pylist():
            entries.append(_export_row(row, codec.mimi, target_dir))
    with (target_dir / "dataset.jsonl").open("w") as index:
        for entry in entries:
            index.write(json.dumps(entry) + "\n")
    return {"exported": len(entries), "index": str(target_dir / "dataset.jsonl")}


def _codes_of(row: dict) -> np.ndarray:
    flat = np.asarray(row["codes"]["data"] if isinstance(row["codes"], dict) else row["codes"])
    return flat.reshape(1 + 2 * NUM_AUDIO_CODEBOOKS, -1)


@torch.no_grad()
def _export_row(row: dict, mimi, target_dir: Path) -> dict:
    codes = torch.from_numpy(_codes_of(row)[:, row["prompt_end"]:].astype(np.int64)).clamp(min=0)
    audio_codes = torch.stack([codes[1:1 + NUM_AUDIO_CODEBOOKS], codes[1 + NUM_AUDIO_CODEBOOKS:]])  # [2, 8, T]
    stereo = mimi.decode(audio_codes)[:, 0].numpy()  # [2, samples]: agent left, user right
    wav = target_dir / "audio" / f"{row['id']}.wav"
    sphn.write_wav(str(wav), stereo.astype(np.float32), SAMPLE_RATE)
    alignments = [[word, [start, end], MAIN_SPEAKER if turn["speaker"] == "agent" else OTHER_SPEAKER]
                  for turn in json.loads(row["transcript"]) for word, start, end in turn.get("words", [])]
    alignments.sort(key=lambda entry: entry[1][0])
    wav.with_suffix(".json").write_text(json.dumps({"alignments": alignments,
                                                    "system_prompt": row["system_prompt"]}))
    return {"path": f"audio/{wav.name}", "duration": stereo.shape[1] / SAMPLE_RATE}


def import_dataset(index_file: Path, config, default_prompt: str) -> dict:
    """Recordings listed in a moshi-finetune index -> shards in `data.output_dir`; returns the manifest."""
    plan, items = import_plan(index_file)  # a bad index fails fast, before any work
    config, output_dir = prepare(config)
    stage = functools.partial(read_recording, output_dir=output_dir, default_prompt=default_prompt)
    return run_and_reconcile(plan, items, stage, config, output_dir)


# ---- import -------------------------------------------------------------------------------------

def import_plan(index_file: Path) -> tuple[list[PlanItem], list[dict]]:
    """One plan item per index line (ids stable in the recording's path), and the pipeline items."""
    if not index_file.is_file():
        raise DataError(f"{index_file}: index file not found")
    plan, items = [], []
    for line_number, line in enumerate(index_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            path = str(entry["path"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{index_file}:{line_number}: expected {{\"path\": ..., \"duration\": ...}} ({exc})") from None
        resolved = str((index_file.parent / path).resolve())
        stem = Path(path).stem
        item_id = f"import.{stem}.{zlib.crc32(resolved.encode()):08x}"
        item = PlanItem(item_id, IMPORT_PERSONA, index_file.stem, 0, line_number, "given")
        plan.append(item)
        items.append({"id": item_id, "persona_id": item.persona_id, "scenario_id": item.scenario_id, "wav": resolved})
    return plan, items


def _turns(alignments: list) -> list[dict]:
    """Group word alignments into turns per speaker; each turn keeps its words' timings."""
    turns: list[dict] = []
    for word, (start, end), speaker_tag in sorted(alignments, key=lambda entry: entry[1][0]):
        speaker = "agent" if speaker_tag == MAIN_SPEAKER else "user"
        last = next((t for t in reversed(turns) if t["speaker"] == speaker), None)
        if last is not None and last is turns[-1] and start - last["end_s"] < TURN_BREAK_S:
            last["words"].append([word, start, end])
            last["text"] += f" {word}"
            last["end_s"] = end
        else:
            turns.append({"speaker": speaker, "text": word, "start_s": start, "end_s": end, "kind": "turn",
                          "interrupted": False, "words": [[word, start, end]]})
    return turns


def read_recording(row: dict, output_dir: Path, default_prompt: str) -> list[dict]:
    """One index entry -> [audio row] (no voice prompt: the recording has none), or [] + a reject."""
    wav = Path(row["wav"])
    try:
        pcm, _ = sphn.read(str(wav), sample_rate=SAMPLE_RATE)
        pcm = np.asarray(pcm, dtype=np.float32)
        if pcm.ndim != 2 or pcm.shape[0] != 2:
            raise DataError(f"expected a stereo wav (agent left, user right), got shape {list(pcm.shape)}")
        if pcm.shape[1] == 0 or not np.isfinite(pcm).all():
            raise DataError("empty audio or non-finite samples")
        meta_file = wav.with_suffix(".json")
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        transcript = _turns(meta.get("alignments", []))
        if not any(turn["speaker"] == "agent" for turn in transcript):
            raise DataError(f"{meta_file}: no {MAIN_SPEAKER} words in 'alignments'")
    except Exception as exc:  # corrupt or unreadable: quarantine it with the reason, keep going
        write_reject(output_dir, row["id"], row["persona_id"], row["scenario_id"], "import",
                     f"corrupt_audio: {wav}: {type(exc).__name__}: {exc}", "error")
        return []
    clear_reject(output_dir, row["id"])
    return [{"id": row["id"], "persona_id": row["persona_id"], "scenario_id": row["scenario_id"],
             "system_prompt": wrap_system_prompt(meta.get("system_prompt") or default_prompt),
             "transcript": json.dumps(transcript), "agent_audio": pcm[0], "user_audio": pcm[1],
             "voice_audio": np.zeros(0, np.float32)}]
