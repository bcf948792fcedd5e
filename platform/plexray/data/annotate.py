"""Back-annotation (the PersonaPlex method): write system prompts for the user's own transcripts.

Input JSONL: one conversation per line, `{"id": ..., "turns": [{"speaker": "agent"|"user", "text": ...}]}`.
Output JSONL: the same lines with `system_prompt` (`<system> ... <system>`) added. A line the LLM
cannot annotate is written to `<output>.rejects.jsonl` with its error, never dropped silently.
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

from tqdm import tqdm

from plexray.data.config import LLMConfig
from plexray.data.dialogue.llm import ChatClient
from plexray.data.errors import DataError, LLMError
from plexray.model.prompt import wrap_system_prompt

INSTRUCTIONS = (
    "You write role prompts for a speech model. Read the conversation and describe the agent as a role to "
    "play: who they are, their situation, their personality and how they speak, in 2-4 sentences addressed "
    "to the agent ('You are ...'). Answer as JSON: {\"system_prompt\": \"...\"}."
)


def read_transcripts(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: transcript file not found")
    conversations = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            turns = entry["turns"]
            if not isinstance(turns, list) or not all("speaker" in t and "text" in t for t in turns):
                raise ValueError("turns must be a list of {speaker, text}")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}:{number}: expected {{\"id\", \"turns\": [{{\"speaker\", \"text\"}}]}} "
                            f"({type(exc).__name__}: {exc})") from None
        entry.setdefault("id", f"line-{number}")
        conversations.append(entry)
    return conversations


def annotate_one(client: ChatClient, conversation: dict) -> str:
    dialogue = "\n".join(f"{t['speaker']}: {t['text']}" for t in conversation["turns"])
    reply = client.complete_json([{"role": "system", "content": INSTRUCTIONS},
                                  {"role": "user", "content": dialogue}])
    prompt = reply.get("system_prompt") if isinstance(reply, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise LLMError("reply has no 'system_prompt' text")
    return wrap_system_prompt(prompt)


def annotate_file(source: Path, target: Path, config: LLMConfig) -> dict:
    conversations = read_transcripts(source)
    client = ChatClient(config)
    rejects_path = target.with_suffix(".rejects.jsonl")
    annotated, rejected = 0, 0
    with concurrent.futures.ThreadPoolExecutor(config.max_concurrency) as pool:
        futures = [pool.submit(annotate_one, client, conversation) for conversation in conversations]
        with target.open("w") as out, rejects_path.open("w") as rejects:
            # disable=None: a bar on a terminal only (bars redrawn with carriage returns run together in a log)
            for conversation, future in tqdm(zip(conversations, futures), total=len(futures), desc="annotate",
                                             disable=None):
                try:
                    out.write(json.dumps({**conversation, "system_prompt": future.result()}) + "\n")
                    annotated += 1
                except LLMError as exc:
                    rejects.write(json.dumps({"id": conversation["id"], "reason": str(exc)}) + "\n")
                    rejected += 1
    return {"input": len(conversations), "annotated": annotated, "rejected": rejected,
            "output": str(target), "rejects": str(rejects_path)}
