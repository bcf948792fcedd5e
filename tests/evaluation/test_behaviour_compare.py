"""`plexray evaluate behaviour --compare` on the demo checkpoint and a LoRA fine-tune of it, at toy size on Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sphn
import torch

from plexray.cli import main

# One conversation of each task but the backchannel monologue (30 s of speech: the metrics' own tests cover it).
TOY = ["evaluation.test_set.conversations={pause_handling: 1, turn_taking: 1, interruption: 1, user_backchannel: 1, "
       "role: 1}", "evaluation.test_set.trailing_silence_s=2", "evaluation.batch_size=4",
       "evaluation.num_workers=2", "evaluation.greedy=true"]


@pytest.fixture(scope="module")
def fine_tune(demo_checkpoint, tmp_path_factory):
    """A LoRA adapter of the demo model as training writes one, its B matrices perturbed (fresh ones are zero)."""
    from plexray.model import load_model
    from plexray.train import lora
    from plexray.train.config import LoraConfig

    model = lora.apply_lora(load_model(str(demo_checkpoint)).lm, LoraConfig(rank=4), seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    directory = tmp_path_factory.mktemp("fine-tune") / "adapter"
    lora.save_adapter(model, directory)
    return directory


def test_compare_writes_the_report_plots_and_audio(ray_cluster, demo_checkpoint, fine_tune, tmp_path, capsys):
    output = tmp_path / "evaluation"
    overrides = [argument for override in TOY for argument in ("--set", override)]
    assert main(["evaluate", "behaviour", "--compare", str(demo_checkpoint), str(fine_tune), "--output", str(output),
                 *overrides]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["scored"] == {"base": 5, "tuned": 5} and printed["asr_backend"] == "pocketsphinx"

    report = json.loads((output / "report.json").read_text())
    assert report["checkpoints"] == {"base": str(demo_checkpoint), "tuned": str(fine_tune)}
    assert report["failures"] == {"base": [], "tuned": []}
    for label in ("base", "tuned"):
        take_over = report["results"][label]["turn_taking"]["take_over"]
        assert take_over["count"] == 1 and take_over["low"] <= take_over["mean"] <= take_over["high"]
        assert set(report["results"][label]) == {"pause_handling", "turn_taking", "interruption", "user_backchannel",
                                                 "role"}
    differences = report["comparison"]["differences"]
    assert {"delta", "p_value", "significant"} <= set(differences["turn_taking"]["take_over"])
    assert "skipped" in report["judge"]
    assert report["speaker_encoder"] == "resemblyzer-ge2e" and report["voices_without_sample"] == []

    summary = (output / "report.md").read_text()
    assert "pocketsphinx" in summary and "## turn_taking" in summary and "skipped" in summary
    assert "resemblyzer-ge2e" in summary
    assert (output / "plots" / "turn_taking.png").stat().st_size > 0

    # Agent audio for listening, as long as each user track; the fine-tune really answers differently.
    tokens = {}
    for label in ("base", "tuned"):
        record = json.loads((output / label / "conversations" / "turn_taking-000.json").read_text())
        tokens[label] = record["text"]
        agent, _ = sphn.read(str(output / label / "audio" / "turn_taking-000.wav"))
        user, _ = sphn.read(str(output / "test-set" / "audio" / "turn_taking-000.wav"))
        assert agent.shape == user.shape and np.isfinite(agent).all()
    assert tokens["base"] != tokens["tuned"]


def test_a_missing_voice_is_refused_naming_the_voices(ray_cluster, demo_checkpoint, tmp_path, capsys):
    overrides = ["--set", "evaluation.test_set.conversations={turn_taking: 1}", "--set",
                 "evaluation.test_set.voices=[NATF3]"]
    assert main(["evaluate", "behaviour", "--checkpoint", str(demo_checkpoint), "--output", str(tmp_path / "out"),
                 *overrides]) == 2
    error = capsys.readouterr().err
    assert "no voice(s) ['NATF3']" in error and "evaluation.test_set.voices" in error


def test_rates_get_rate_intervals_and_quantities_do_not_even_when_all_zero():
    """A silent agent: take-over 0 of 3 is a rate with Wilson's interval; 0 s of speech is a quantity
    measured exactly 0 three times, whose interval is [0, 0], not a rate's [0, 0.56]."""
    from plexray.evaluation.report import summarize

    records = [{"id": f"t{i}", "task": "turn_taking", "error": None,
                "scores": {"take_over": 0, "agent_speech_s": 0.0}} for i in range(3)]
    results = summarize({"base": records}, None, {})["results"]["base"]["turn_taking"]
    assert results["take_over"]["low"] == 0 and results["take_over"]["high"] == pytest.approx(0.5615, abs=1e-4)
    assert results["agent_speech_s"] == {"mean": 0.0, "count": 3, "low": 0.0, "high": 0.0}
