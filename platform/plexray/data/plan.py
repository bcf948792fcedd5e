"""The plan: which conversations a dataset holds, each with a stable id that resume and dedup rely on."""

from __future__ import annotations

import dataclasses
import random
import zlib

from plexray.data.config import DataConfig
from plexray.data.personas import Library
from plexray.data.prompts import DETAIL_LEVELS


@dataclasses.dataclass(frozen=True)
class PlanItem:
    id: str
    persona_id: str
    scenario_id: str
    seed: int  # the conversation's own seed: dialogue, timing and sampling all derive from it
    index: int
    prompt_detail: str


def conversation_id(persona_id: str, scenario_id: str, seed: int, index: int) -> str:
    return f"{persona_id}.{scenario_id}.s{seed}.{index:04d}"


def plan_conversations(config: DataConfig, library: Library) -> list[PlanItem]:
    items = []
    for persona_id in sorted(library.personas):
        for scenario_id in sorted(library.scenarios):
            for index in range(config.conversations_per_pair):
                item_id = conversation_id(persona_id, scenario_id, config.seed, index)
                item_seed = zlib.crc32(item_id.encode())  # stable across processes, unlike hash()
                detail = (DETAIL_LEVELS[item_seed % len(DETAIL_LEVELS)] if config.prompt_detail == "mixed"
                          else config.prompt_detail)
                items.append(PlanItem(item_id, persona_id, scenario_id, item_seed, index, detail))
    if config.max_conversations is not None and config.max_conversations < len(items):
        random.Random(config.seed).shuffle(items)
        items = sorted(items[:config.max_conversations], key=lambda item: item.id)
    return items
