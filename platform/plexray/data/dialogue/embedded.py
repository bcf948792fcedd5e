"""The embedded dialogue generator: seeded, offline, persona-consistent.

Lines come from the scenario's templates; the persona's speech patterns are written into every
agent line (fillers, catchphrases, clarifying questions, technical terms), so the same persona
sounds the same across conversations while the content varies with the seed. In a grounded
conversation, agent templates with `{fact}` speak a sentence of the retrieved passages.
"""

from __future__ import annotations

import random
import typing as tp

from plexray.data.dialogue.script import Dialogue, Speaker, Turn
from plexray.data.personas import Persona, Scenario
from plexray.knowledge.facts import fact_sentences


def _fill(template: str, scenario: Scenario, rng: random.Random, facts: tp.Iterator[str] | None) -> str:
    fact = next(facts) if facts is not None and "{fact}" in template else ""
    return template.format(item=rng.choice(scenario.items), counterpart=scenario.counterpart, fact=fact)


def _styled(line: str, persona: Persona, rng: random.Random) -> str:
    patterns = persona.speech_patterns
    if patterns.technical_terms and rng.random() < patterns.technical_rate:
        line = f"{line} I'm thinking {rng.choice(patterns.technical_terms)}."
    if patterns.questions and rng.random() < patterns.question_rate:
        line = f"{line} {rng.choice(patterns.questions)}"
    if patterns.phrases and rng.random() < patterns.phrase_rate:
        phrase = rng.choice(patterns.phrases)
        line = f"{phrase} {line}" if rng.random() < 0.5 else f"{line} {phrase}"
    if patterns.fillers and rng.random() < patterns.filler_rate:
        filler = rng.choice(patterns.fillers)
        keep_case = line.startswith(("I ", "I'"))  # the pronoun stays capitalised
        line = f"{filler[0].upper()}{filler[1:]}, {line if keep_case else line[0].lower() + line[1:]}"
    return line


def _shuffled_cycle(lines: list[str], rng: random.Random) -> tp.Iterator[str]:
    """Every line once in a random order, then again in a new order: long dialogues vary, too."""
    while True:
        yield from rng.sample(lines, len(lines))


class EmbeddedBackend:
    def write(self, persona: Persona, scenario: Scenario, seed: int, min_turns: int, max_turns: int,
              first_speaker: Speaker, passages: tp.Sequence[str] = ()) -> Dialogue:
        rng = random.Random(seed)
        facts = fact_sentences(passages)
        # Without facts a '{fact}' line has nothing to say: those templates are left out.
        agent_lines = scenario.agent_lines if facts else [t for t in scenario.agent_lines if "{fact}" not in t]
        num_turns = rng.randint(min_turns, max(min_turns, min(max_turns, min_turns + 6)))
        other: dict[Speaker, Speaker] = {"agent": "user", "user": "agent"}
        speakers = [first_speaker]
        while len(speakers) < num_turns:
            speakers.append(other[speakers[-1]])
        lines = {"agent": _shuffled_cycle(agent_lines, rng), "user": _shuffled_cycle(scenario.user_lines, rng)}
        fact_cycle = _shuffled_cycle(facts, rng) if facts else None
        closings = {"agent": scenario.agent_closings, "user": scenario.user_closings}
        turns = []
        for index, speaker in enumerate(speakers):
            closing = index >= num_turns - 2
            template = rng.choice(closings[speaker]) if closing else next(lines[speaker])
            text = _fill(template, scenario, rng, fact_cycle if speaker == "agent" else None)
            turns.append(Turn(speaker, _styled(text, persona, rng) if speaker == "agent" else text))
        return Dialogue(tuple(turns))
