"""The embedded dialogue generator and validation."""

from plexray.data.dialogue.embedded import EmbeddedBackend
from plexray.data.dialogue.script import Dialogue, Turn
from plexray.data.dialogue.validate import dialogue_problem
from plexray.data.personas import load_library

LIBRARY = load_library()


def _write(persona_id, scenario_id, seed):
    return EmbeddedBackend().write(LIBRARY.personas[persona_id], LIBRARY.scenarios[scenario_id], seed, 6, 12, "agent")


def test_seeded_valid_and_varied():
    first = _write("angry-alex", "wrong-order", 1)
    assert first == _write("angry-alex", "wrong-order", 1)
    assert first != _write("angry-alex", "wrong-order", 2)
    for seed in range(20):
        assert dialogue_problem(_write("indecisive-ian", "morning-regular", seed), 6, 12, "agent") is None


def test_agent_lines_show_the_persona_speech_patterns():
    nervous = " ".join(t.text for seed in range(5) for t in _write("nervous-nancy", "first-time-order", seed).turns
                       if t.speaker == "agent")
    assert any(f"{filler.capitalize()}," in nervous for filler in ("um", "uh", "like"))
    expert = " ".join(t.text for seed in range(5) for t in _write("enthusiast-emma", "brewing-talk", seed).turns
                      if t.speaker == "agent")
    terms = LIBRARY.personas["enthusiast-emma"].speech_patterns.technical_terms
    assert any(term in expert for term in terms)
    user_side = " ".join(t.text for seed in range(5) for t in _write("enthusiast-emma", "morning-regular", seed).turns
                         if t.speaker == "user")
    assert not any(term in user_side for term in terms), "the counterpart does not take the persona's style"


def test_validation_reasons():
    def dialogue(*speakers):
        return Dialogue(tuple(Turn(s, "hello there") for s in speakers))

    assert dialogue_problem(dialogue("agent", "user"), 4, 10, "agent").startswith("turn_count:")
    assert dialogue_problem(dialogue("user", "agent", "user", "agent"), 4, 10, "agent").startswith("first_speaker:")
    assert dialogue_problem(dialogue("agent", "user", "user", "agent"), 4, 10, "agent").startswith("not_alternating:")
    assert dialogue_problem(dialogue("agent", "user", "robot", "agent"), 4, 10, "agent").startswith("unknown_speaker:")
    assert dialogue_problem(dialogue("agent", "user", "agent", "user"), 4, 10, "agent") is None
