"""Training shards in the contract schema, written by the tests themselves (random conversation codes
after a real prompt phase from plexray.model.prompt); damaged checkpoint files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.extensions import ArrowVariableShapedTensorArray

from plexray.model.prompt import build_prompt_frames, wrap_system_prompt


def conversation_row(bundle, index: int, frames: int, seed: int = 0, streams: int = 17) -> dict:
    generator = np.random.default_rng(seed * 1000 + index)
    prompt_text = wrap_system_prompt(f"You are barista number {index}.")
    prompt = build_prompt_frames(None, bundle.tokenizer.encode(prompt_text), bundle.prompt_codes)
    body = generator.integers(0, 2048, size=(17, frames)).astype(np.int64)
    body[0] = np.where(generator.random(frames) < 0.6, 3, generator.integers(4, 512, size=frames))
    codes = np.concatenate([prompt.model_codes.numpy(), body], axis=1)[:streams].astype(np.int16)
    return {
        "id": f"barista/order/{seed}/{index}", "persona_id": "barista", "scenario_id": "order",
        "system_prompt": prompt_text, "codes": codes, "num_frames": codes.shape[1],
        "prompt_start": 0, "prompt_end": prompt.model_codes.shape[1], "duration_s": codes.shape[1] / 12.5,
        "alignment": "uniform",
        "transcript": json.dumps([{"speaker": "agent", "text": "hi", "start_s": 0.0, "end_s": 1.0}]),
    }


def write_shards(directory: Path, rows: list[dict], rows_per_shard: int = 4, drop: tuple[str, ...] = ()) -> Path:
    """Write `rows` as <directory>/shards/part-NNNNN.parquet (codes as Ray's variable-shaped tensor column)."""
    (directory / "shards").mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, len(rows), rows_per_shard)):
        chunk = rows[start:start + rows_per_shard]
        columns = {name: [row[name] for row in chunk] for name in chunk[0] if name not in drop}
        arrays = {name: (ArrowVariableShapedTensorArray.from_numpy(values) if name == "codes" else pa.array(values))
                  for name, values in columns.items()}
        for name in ("num_frames", "prompt_start", "prompt_end"):
            if name in arrays:
                arrays[name] = arrays[name].cast(pa.int32())
        pq.write_table(pa.table(arrays), directory / "shards" / f"part-{part:05d}.parquet")
    (directory / "manifest.json").write_text(json.dumps({"rows": len(rows)}))
    return directory


def train_overrides(dataset: Path, output: Path, **values) -> list[str]:
    """--set overrides for a tiny, fast run on the demo model."""
    settings = {"model.checkpoint": "demo", "train.dataset": str(dataset), "train.output_dir": str(output),
                "train.max_frames": 48, "train.batch_size": 2, "train.max_steps": 4, "train.eval_every": 2,
                "train.validation_fraction": 0.25, "train.optim.lr": 1e-3, "train.optim.warmup_steps": 1,
                "train.lora.rank": 4} | values
    return [f"{key}={value}" for key, value in settings.items()]


def cut_in_half(path: Path) -> None:
    """A file cut short, as a full disk or a broken-off copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
