"""One training row per conversation, in the shared training-set contract (see the Data issue).

codes [17, T] int16 = the prompt phase as the model reads it (`PromptFrames.model_codes`: NVIDIA's
generator never shows the model the first prompt frame) followed by the conversation:
row 0 the agent's aligned text, rows 1-8 the agent's Mimi codes, rows 9-16 the user's.
`duration_s` is the whole row (num_frames / 12.5, prompt phase included); the conversation alone
is (num_frames - prompt_end) / 12.5, which is what the manifest's hours of audio count.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import torch
from ray.air.util.tensor_extensions.arrow import ArrowVariableShapedTensorArray, ArrowVariableShapedTensorType

from plexray.model.architectures import NUM_AUDIO_CODEBOOKS
from plexray.model.prompt import FRAME_RATE, PromptCodes, build_prompt_frames

NUM_STREAMS = 1 + 2 * NUM_AUDIO_CODEBOOKS


def conversation_codes(text_row: np.ndarray, agent_codes: torch.Tensor, user_codes: torch.Tensor) -> torch.Tensor:
    """[17, T] from text [T], agent [8, T] and user [8, T'] codes (cropped to the shortest)."""
    frames = min(len(text_row), agent_codes.shape[1], user_codes.shape[1])
    return torch.cat([torch.as_tensor(text_row[None, :frames]), agent_codes[:, :frames].long(),
                      user_codes[:, :frames].long()])


def build_row(meta: dict, conversation: torch.Tensor, voice_codes: torch.Tensor | None,
              prompt_tokens: list[int], prompt_codes: PromptCodes, alignment: str) -> dict:
    """The contract row. `meta` holds id, persona_id, scenario_id, system_prompt, transcript (list), and
    what alignment left out: late_words (words starting after the audio ends) and dropped_text_tokens."""
    prompt = build_prompt_frames(voice_codes, prompt_tokens, prompt_codes)
    codes = torch.cat([prompt.model_codes, conversation], dim=1)
    if codes.min() < -1 or codes.max() > np.iinfo(np.int16).max:
        raise ValueError(f"codes out of int16 range: [{int(codes.min())}, {int(codes.max())}]")
    return {
        "id": meta["id"],
        "persona_id": meta["persona_id"],
        "scenario_id": meta["scenario_id"],
        "system_prompt": meta["system_prompt"],
        "codes": codes.numpy().astype(np.int16),
        "num_frames": np.int32(codes.shape[1]),
        "prompt_start": np.int32(0),
        "prompt_end": np.int32(prompt.model_codes.shape[1]),
        "duration_s": float(codes.shape[1] / FRAME_RATE),
        "alignment": alignment,
        "transcript": json.dumps(meta["transcript"]),
        "late_words": np.int32(meta["late_words"]),
        "dropped_text_tokens": np.int32(meta["dropped_text_tokens"]),
    }


CODES_TYPE = ArrowVariableShapedTensorType(pa.int16(), 2)  # [17, T] with T varying per row
SCHEMA = pa.schema([
    ("id", pa.string()), ("persona_id", pa.string()), ("scenario_id", pa.string()), ("system_prompt", pa.string()),
    ("codes", CODES_TYPE), ("num_frames", pa.int32()), ("prompt_start", pa.int32()), ("prompt_end", pa.int32()),
    ("duration_s", pa.float64()), ("alignment", pa.string()), ("transcript", pa.string()),
    ("late_words", pa.int32()), ("dropped_text_tokens", pa.int32()),
])


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows -> an Arrow table with the contract's schema.

    `codes` is always a variable-shaped tensor column, even when every row in a batch happens to
    have the same T (Ray would otherwise infer a fixed-shape type and refuse to merge the shards).
    """
    columns = []
    for field in SCHEMA:
        if field.name == "codes":
            columns.append(ArrowVariableShapedTensorArray.from_numpy([row["codes"] for row in rows]) if rows
                           else pa.ExtensionArray.from_storage(CODES_TYPE, pa.array([], type=CODES_TYPE.storage_type)))
        else:
            columns.append(pa.array([row[field.name] for row in rows], type=field.type))
    return pa.Table.from_arrays(columns, schema=SCHEMA)
