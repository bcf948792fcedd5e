"""`evaluate_behaviour`: test set -> every checkpoint through the engine on Ray workers -> scores -> judge
-> report. What `plexray evaluate behaviour`, jobs/evaluate.py and the demo call.

    <output_dir>/test-set/                       the test set built for this run (unless evaluation.test_set_dir)
    <output_dir>/<label>/audio/<id>.wav          the agent's track, as long as the user's, for listening
    <output_dir>/<label>/conversations/<id>.json its text pieces with frame times, scores or error
    <output_dir>/report.json, report.md, plots/  the report (plexray.evaluation.report)

Each conversation's files are written as soon as its worker hands it back, so a run that stops
keeps everything done so far.
"""

from __future__ import annotations

import json
import logging
import typing as tp
from pathlib import Path

import sphn

from plexray.evaluation import report as reporting
from plexray.evaluation.testset import build_test_set, load_test_set, read_user_audio
from plexray.evaluation.workers import EvaluationError, run_checkpoint
from plexray.model import reference
from plexray.model.prompt import SAMPLE_RATE

if tp.TYPE_CHECKING:
    from plexray.settings import PlexrayConfig

logger = logging.getLogger(__name__)
TEST_SET_DIR = "test-set"


def evaluate_behaviour(config: "PlexrayConfig", checkpoints: dict[str, str], output_dir: str | Path) -> dict:
    """Evaluate each checkpoint (label -> ref) on the same test set; with two, the second is compared
    with the first (base, tuned). Returns the report (also written to output_dir/report.json)."""
    check_request(config, checkpoints, output_dir)
    output_dir = Path(output_dir)
    evaluation = config.evaluation
    test_dir = Path(evaluation.test_set_dir) if evaluation.test_set_dir else output_dir / TEST_SET_DIR
    if not evaluation.test_set_dir:
        build_test_set(evaluation.test_set, test_dir, evaluation.seed)
    conversations = load_test_set(test_dir)
    if not conversations:
        raise EvaluationError(f"{test_dir}: the test set has no conversations")

    records: dict[str, list[dict]] = {}
    scorings = []
    for label, ref in checkpoints.items():
        records[label] = []
        write = _record_writer(output_dir / label, records[label])
        scorings.append(run_checkpoint(config, ref, conversations, lambda c: read_user_audio(test_dir, c), write,
                                       label=label))
    judge_status = judge_role_answers(config, conversations, records)
    for label, label_records in records.items():  # the judge's scores join the saved role records
        for record in label_records:
            if record["task"] == "role":
                _save_record(output_dir / label, record)
    context = {"checkpoints": dict(checkpoints),
               "asr_backend": ", ".join(sorted({scoring["asr_backend"] for scoring in scorings})),
               "speaker_encoder": scorings[0]["speaker_encoder"],  # one config: the same for every checkpoint
               "voices_without_sample": sorted({v for scoring in scorings for v in scoring["voices_without_sample"]}),
               "judge": judge_status, "batch_size": evaluation.batch_size,
               "test_set": {"directory": str(test_dir), "conversations": len(conversations),
                            "manifest": json.loads((test_dir / "manifest.json").read_text())}}
    labels = list(checkpoints)
    summary = reporting.summarize(records, (labels[0], labels[1]) if len(labels) == 2 else None, context)
    paths = reporting.write_report(summary, records, output_dir)
    logger.info("behavioural report: %s", paths["markdown"])
    return summary


def check_request(config: "PlexrayConfig", checkpoints: dict[str, str], output_dir: str | Path) -> None:
    """What can be refused before any cluster starts: labels, checkpoints that are not there, an output
    directory in use, a test set directory that is not one. Raises EvaluationError naming the problem."""
    if not checkpoints:
        raise EvaluationError("no checkpoint to evaluate")
    for label, ref in checkpoints.items():
        if not label or "/" in label or label in (TEST_SET_DIR, reporting.PLOTS_DIR):
            raise EvaluationError(f"checkpoint label {label!r}: must be a plain name other than "
                                  f"{TEST_SET_DIR!r} and {reporting.PLOTS_DIR!r}")
        if ref != reference.DEMO_REF and not ref.startswith("hf://") and not Path(ref).is_dir():
            raise EvaluationError(f"checkpoint {ref}: no such directory (a checkpoint is a directory, 'demo' "
                                  "or hf://REPO)")
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise EvaluationError(f"{output_dir}: not empty; choose a new directory for the evaluation")
    test_set_dir = config.evaluation.test_set_dir
    if test_set_dir and not Path(test_set_dir).is_dir():
        raise EvaluationError(f"test set {test_set_dir}: no such directory")


def evaluate_behaviour_once(config: "PlexrayConfig", checkpoints: dict[str, str], output_dir: str | Path) -> dict:
    """`evaluate_behaviour` for jobs that are run again (the demo, `plexray train`): a finished report of
    the same checkpoints in `output_dir` is reused; anything else there (an interrupted run's files, a
    report of other checkpoints) belongs to this job and is started over."""
    import shutil

    output_dir = Path(output_dir)
    finished = output_dir / reporting.REPORT_JSON
    if finished.is_file():
        report = json.loads(finished.read_text())
        if report.get("checkpoints") == checkpoints:
            return report
    shutil.rmtree(output_dir, ignore_errors=True)
    return evaluate_behaviour(config, checkpoints, output_dir)


def digest(report: dict, output_dir: str | Path) -> dict:
    """The few lines of a report a job's summary JSON carries: where it is and what differed significantly."""
    output_dir = Path(output_dir)
    differences = (report.get("comparison") or {}).get("differences", {})
    return {"report": str(output_dir / reporting.REPORT_MD), "json": str(output_dir / reporting.REPORT_JSON),
            "conversations": report["test_set"]["conversations"], "scored": report["scored"],
            "asr_backend": report["asr_backend"],
            "significant_differences": [f"{task}.{name} ({difference['better']} better)"
                                        for task, metrics in differences.items()
                                        for name, difference in metrics.items() if difference["significant"]]}


def judge_role_answers(config: "PlexrayConfig", conversations: list[dict], records: dict[str, list[dict]]) -> str:
    """Add `judge_score` (0-5) to each role answer's scores when a judge endpoint is configured; returns
    what happened, for the report. A failed judgement is noted on its conversation, never fatal."""
    from plexray.evaluation.judge import SKIPPED_NOTE, judge_role_answer

    judge = config.evaluation.judge
    if not judge.base_url:
        return f"not judged: {SKIPPED_NOTE}"
    by_id = {conversation["id"]: conversation for conversation in conversations}
    judged = failed = 0
    for label_records in records.values():
        for record in label_records:
            if record["task"] != "role" or record["scores"] is None:
                continue
            conversation = by_id[record["id"]]
            role = conversation["role"]
            try:
                score = judge_role_answer(role["question_type"], conversation["persona"]["text_prompt"],
                                          role["question"], role["expected"], record["scores"]["answer_transcript"],
                                          judge)
            except Exception as exc:  # the endpoint down or a bad reply: note it, keep the rest
                record["scores"]["judge_error"] = f"{type(exc).__name__}: {exc}"
                failed += 1
                continue
            record["scores"].update(judge_score=score.score, judge_reason=score.reason)
            judged += 1
    return f"judged 0-5 by {judge.base_url}: {judged} answers" + (f", {failed} failed" if failed else "")


def _record_writer(directory: Path, kept: list[dict]) -> tp.Callable[[dict], None]:
    """Writes each record's agent audio and its text/scores as it arrives; keeps the record (without audio)."""
    (directory / "audio").mkdir(parents=True, exist_ok=True)
    (directory / "conversations").mkdir(exist_ok=True)

    def write(record: dict) -> None:
        audio = record.pop("agent_audio")
        if audio is not None:
            sphn.write_wav(str(directory / "audio" / f"{record['id']}.wav"), audio, SAMPLE_RATE)
        _save_record(directory, record)
        if record["error"]:
            logger.warning("conversation %s failed: %s", record["id"], record["error"])
        kept.append(record)

    return write


def _save_record(directory: Path, record: dict) -> None:
    (directory / "conversations" / f"{record['id']}.json").write_text(json.dumps(record, indent=2))
