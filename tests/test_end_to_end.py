"""The README's main command, shortened: data, training, merge, serving, a real conversation and the
behavioural comparison of base and fine-tuned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sphn

from plexray.config import load_config
from plexray.demo import build_dataset, evaluate_and_merge, fine_tune, run_demo
from plexray.evaluation.pipeline import evaluate_behaviour_once
from plexray.settings import PlexrayConfig
from plexray.train.run import SUMMARY_FILE

from repo_paths import REPO_ROOT

SHORTENED = [
    "data.max_conversations=5",
    "train.validation_fraction=0.4",  # two held-out conversations: one per worker
    "train.max_steps=4",
    "train.eval_every=2",
    "serve.sessions_per_replica=1",
    "serve.num_cpus=0.5",
    "evaluation.test_set.conversations={turn_taking: 1, interruption: 1, role: 1}",
]


def test_demo_end_to_end_shortened(ray_cluster, demo_checkpoint, tmp_path, capfd):
    config = load_config(PlexrayConfig, REPO_ROOT / "configs" / "demo.yaml",
                         [f"model.checkpoint={demo_checkpoint}", *SHORTENED])
    summary = run_demo(config, tmp_path / "demo")
    printed = capfd.readouterr()
    # The platform's own progress, one line per step, with Ray's internal log lines in files instead.
    assert [line.split("]")[0] for line in printed.out.splitlines() if line.startswith("[")] == \
        [f"[{step}/8" for step in range(1, 9)]
    assert printed.out.count("done in") == 4  # dataset, training, conversation, behaviour: counts and timings
    for ray_internal in ("Running Dataset", "Execution plan", "'training_iteration'", "Deployed app"):
        assert ray_internal not in printed.out
    assert "Execution plan of Dataset" not in printed.err  # Ray Data's progress bars stay on stderr, its log lines go
    assert (tmp_path / "demo" / "logs" / "ray-driver.log").stat().st_size > 0
    assert summary["logs"] == str(tmp_path / "demo" / "logs")
    assert summary == json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["dataset"]["written"] >= 4
    assert summary["training"]["steps"] == 4 and summary["training"]["num_workers"] == 2
    before, after = summary["validation_loss"]["before"], summary["validation_loss"]["after"]
    assert before > 0 and after > 0 and after != before  # the served model is the fine-tuned one
    conversation = summary["conversation"]
    reply, rate = sphn.read(conversation["reply_wav"])
    assert rate == 24000 and reply.shape[-1] / rate >= conversation["user_seconds"] - 0.2
    assert conversation["handshake_s"] > 0 and conversation["first_audio_s"] > 0
    assert json.loads(open(conversation["transcript"]).read())["agent_text"] == conversation["agent_text"]
    behaviour = summary["behaviour"]  # base vs fine-tuned on the serving engine, each conversation scored
    assert behaviour["conversations"] == 3 and behaviour["scored"] == {"base": 3, "tuned": 3}
    report = json.loads(open(behaviour["json"]).read())
    assert report["comparison"]["base"] == "base" and report["checkpoints"]["tuned"] == summary["merged_checkpoint"]
    assert "turn_taking" in open(behaviour["report"]).read()
    # It ends with where to look and what to do next, not a JSON dump.
    ending = printed.out[printed.out.index("Done in"):]
    assert behaviour["report"] in ending and summary["training"]["loss_curve"] in ending
    assert "--keep-serving" in ending and "{" not in ending

    # Run again, the dataset step resumes (nothing left to write), training and merge reuse what the first
    # run built, and the behaviour step its finished report (the steps are called one by one: Serve and the
    # conversation have nothing to reuse).
    workdir = tmp_path / "demo"
    built = {path: path.stat().st_mtime_ns for path in (Path(summary["training"]["run_dir"]) / SUMMARY_FILE,
                                                        workdir / "merged" / "config.json")}
    assert build_dataset(config, workdir)["written"] == summary["dataset"]["written"]
    assert fine_tune(config, workdir) == summary["training"]
    losses, merged = evaluate_and_merge(config, Path(summary["training"]["adapter"]), workdir)
    assert losses == pytest.approx(summary["validation_loss"], rel=1e-6)  # same weights, same data
    assert str(merged) == summary["merged_checkpoint"]
    checkpoints = {"base": summary["base_checkpoint"], "tuned": str(merged)}
    assert evaluate_behaviour_once(config, checkpoints, workdir / "behaviour") == report
    assert {path: path.stat().st_mtime_ns for path in built} == built
