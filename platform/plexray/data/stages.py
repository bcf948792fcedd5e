"""The two stages of generation as plain functions and classes; `pipeline.py` runs them on Ray Data.

1. `synthesize_item`: plan item -> dialogue -> validation -> speech on two channels -> one row of
   audio (or a reject record and no row).
2. `ConversationEncoder`: a batch of audio rows -> Mimi codes of both channels and the voice
   prompt in one batched pass -> aligned text -> contract rows (see rows.py).
"""

from __future__ import annotations

import json
import logging
import traceback
import typing as tp
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from plexray.data import alignment
from plexray.data.assembly import assemble
from plexray.data.codec import Codec, encode_waves, load_codec, num_frames
from plexray.data.config import DataConfig
from plexray.data.dialogue.backends import backend_for
from plexray.data.dialogue.validate import dialogue_problem, grounding_problem
from plexray.data.personas import Library
from plexray.data.plan import PlanItem
from plexray.data.prompts import system_prompt
from plexray.data.rejects import clear_reject, write_reject
from plexray.data.rows import build_row, conversation_codes, rows_to_table
from plexray.data.quality import speech_quality_problem
from plexray.data.tts import speaker_synthesizer
from plexray.model.config import ModelConfig
from plexray.model.voices import encode_voice, normalize_loudness

logger = logging.getLogger(__name__)

CHANNEL_COLUMNS = ("agent_audio", "user_audio")


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def synthesize_item(row: dict, config: DataConfig, library: Library, output_dir: Path) -> list[dict]:
    """One plan item -> [audio row], or [] with a reject written (invalid dialogue, speech below the quality
    gate, or errors after retries: an endpoint down or answering no speech)."""
    item = PlanItem(**{field: row[field] for field in PlanItem.__dataclass_fields__})
    persona, scenario = library.personas[item.persona_id], library.scenarios[item.scenario_id]
    # A grounded conversation's passages (data/grounding.py); None for one that is not grounded.
    passages = json.loads(row.get("passages") or "null")
    dialogue_config = config.dialogue
    last_error: BaseException | None = None
    for attempt in range(1, config.max_attempts + 1):
        try:
            dialogue = backend_for(dialogue_config).write(
                persona, scenario, item.seed, dialogue_config.min_turns, dialogue_config.max_turns,
                dialogue_config.first_speaker, passages or ())
            problem = (dialogue_problem(dialogue, dialogue_config.min_turns, dialogue_config.max_turns,
                                        dialogue_config.first_speaker) or grounding_problem(dialogue, passages))
            if problem is not None:
                write_reject(output_dir, item.id, item.persona_id, item.scenario_id, "validate", problem,
                             "invalid", attempt)
                return []
            tts = {"agent": speaker_synthesizer(config.speech.tts.agent, persona.id),
                   "user": speaker_synthesizer(config.speech.tts.user, scenario.id)}
            conversation = assemble(dialogue, persona, scenario, tts, config.speech, item.seed)
            # the voice prompt in the agent's synthesizer and voice: the one its turns are spoken in
            sample = (tts["agent"].speak(config.speech.voice_sample_text, persona.voice)
                      if config.include_voice_prompt else None)
            problem = speech_quality_problem(conversation.transcript, sample.words if sample else (),
                                             config.speech.min_aligned_fraction)
            if problem is not None:  # the same script speaks the same way again: no retry
                write_reject(output_dir, item.id, item.persona_id, item.scenario_id, "quality", problem,
                             "invalid", attempt)
                return []
            voice = normalize_loudness(sample.samples) if sample else np.zeros(0, np.float32)
            clear_reject(output_dir, item.id)  # an earlier run may have quarantined it
            return [{
                **{field: row[field] for field in ("id", "persona_id", "scenario_id")},
                "system_prompt": system_prompt(persona, scenario, item.prompt_detail, passages or ()),
                "transcript": json.dumps(conversation.transcript),
                "agent_audio": conversation.agent,
                "user_audio": conversation.user,
                "voice_audio": voice,
            }]
        except Exception as exc:  # any failure of one item must not stop the others: retry, then quarantine
            last_error = exc
            logger.warning("conversation %s attempt %d failed: %s", item.id, attempt, _error_text(exc))
    write_reject(output_dir, item.id, item.persona_id, item.scenario_id, "synthesize",
                 f"error: {_error_text(last_error)}", "error", config.max_attempts)
    return []


def agent_spans(transcript: list[dict]) -> tuple[list[alignment.Span], list[alignment.Span]]:
    """The agent's words (from each turn's word timings) and turns, as alignment spans."""
    agent = [turn for turn in transcript if turn["speaker"] == "agent"]
    words = [alignment.Span(word, start, end) for turn in agent for word, start, end in turn.get("words", [])]
    turns = [alignment.Span(turn["text"], turn["start_s"], turn["end_s"]) for turn in agent]
    return words, turns


class ConversationEncoder:
    """Holds the codec; encodes batches of conversations (both channels and voice prompts together)."""

    def __init__(self, model: ModelConfig, config: DataConfig, output_dir: str, codec: Codec | None = None):
        torch.set_num_threads(config.encode.torch_threads)
        self.codec = codec or load_codec(model, config.encode.device)
        self.config = config
        self.output_dir = Path(output_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        items = [{key: batch[key][index] for key in batch} for index in range(len(batch["id"]))]
        try:
            codes = self._encode(items)
        except Exception:  # one bad item must not sink its batch: fall back to one at a time
            codes = []
            for item in items:
                try:
                    codes.append(self._encode([item])[0])
                except Exception as exc:
                    logger.warning("encoding %s failed: %s", item["id"], traceback.format_exc())
                    codes.append(exc)
        rows = []
        for item, encoded in zip(items, codes):
            try:
                if isinstance(encoded, BaseException):
                    raise encoded
                rows.append(self._row(item, *encoded))
            except Exception as exc:
                write_reject(self.output_dir, str(item["id"]), str(item["persona_id"]), str(item["scenario_id"]),
                             "encode", f"error: {_error_text(exc)}", "error")
        return rows_to_table(rows)

    def _encode(self, items: list[dict]) -> list[tuple]:
        """Per item: (agent [8, T], user [8, T], voice [8, Tv] or None).

        Both channels of every item go through Mimi in one batch; the voice sample is encoded as
        serving encodes a voice (`encode_voice`: frame by frame, streaming), so a training prompt
        holds the codes a session's prompt will hold.
        """
        waves = [np.asarray(item[column], dtype=np.float32) for item in items for column in CHANNEL_COLUMNS]
        codes = encode_waves(self.codec.mimi, waves)
        encoded = []
        for index, item in enumerate(items):
            voice = np.asarray(item["voice_audio"], dtype=np.float32)
            encoded.append((codes[2 * index], codes[2 * index + 1],
                            encode_voice(self.codec.mimi, voice) if voice.size else None))
        return encoded

    def _row(self, item: dict, agent: torch.Tensor, user: torch.Tensor, voice: torch.Tensor | None) -> dict:
        transcript = json.loads(str(item["transcript"]))
        words, turns = agent_spans(transcript)
        frames = num_frames(len(item["agent_audio"]))
        text = alignment.align(self.config.alignment, words, turns, frames, self.codec.tokenize)
        conversation = conversation_codes(text.row, agent, user)
        meta = {"id": str(item["id"]), "persona_id": str(item["persona_id"]),
                "scenario_id": str(item["scenario_id"]), "system_prompt": str(item["system_prompt"]),
                "transcript": transcript, "late_words": text.late_words, "dropped_text_tokens": text.dropped_tokens}
        return build_row(meta, conversation, voice, self.codec.tokenize(meta["system_prompt"]),
                         self.codec.prompt_codes, self.config.alignment)


def rows_to_batch(rows: tp.Sequence[dict]) -> dict[str, np.ndarray]:
    """Rows -> the numpy batch format Ray Data hands to map_batches (for running stages without Ray)."""
    batch = {}
    for key in rows[0]:
        column = np.empty(len(rows), dtype=object)
        for index, row in enumerate(rows):  # element-wise: numpy would broadcast equal-shaped arrays
            column[index] = row[key]
        batch[key] = column
    return batch
