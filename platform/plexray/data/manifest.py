"""manifest.json: what the dataset holds, and proof that planned = written + rejected."""

from __future__ import annotations

import collections
import datetime
import importlib.metadata
import json
import os
import subprocess
from pathlib import Path

from plexray.data.config import TimingConfig
from plexray.data.dialogue.validate import per_persona_problems, reason_tag
from plexray.data.plan import PlanItem
from plexray.data.rejects import read_rejects
from plexray.data.shards import shard_files, written_ids
from plexray.data.stats import read_index, write_report

PACKAGES = ("plexray", "ray", "torch", "moshi", "numpy", "pyarrow", "sentencepiece", "pydantic")


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    try:
        found["espeak-ng"] = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True,
                                            check=False).stdout.strip()
    except OSError:
        found["espeak-ng"] = "not installed"
    return found


def reject_cause(record: dict) -> str:
    """What a reject is counted under: its stage and the validation tag, or for a crash the exception
    type (the message differs per conversation, the type is what a person fixes)."""
    if record["kind"] == "error":
        exception_type = record["reason"].removeprefix("error: ").split(":", 1)[0]
        return f"{record['stage']} error {exception_type}"
    return f"{record['stage']} {reason_tag(record['reason'])}"


def dominant_reject_cause(records: list[dict]) -> dict | None:
    """The most common cause among `records`, how many it covers, and one full reason as an example."""
    if not records:
        return None
    counts = collections.Counter(reject_cause(record) for record in records)
    cause, count = counts.most_common(1)[0]
    example = next(record["reason"] for record in records if reject_cause(record) == cause)
    return {"cause": cause, "count": count, "example": example}


def run_status(missing: list[str], reject_fraction: float, max_reject_fraction: float) -> str:
    """`too_many_rejects` fails the run even when every item is accounted for: a run that rejects
    most of its plan has a systematic cause (a missing tool, a bug, an endpoint down), not bad luck."""
    if reject_fraction > max_reject_fraction:
        return "too_many_rejects"
    return "complete" if not missing else "incomplete"


def reject_limit_message(manifest: dict, output_dir: Path) -> str:
    """One line for a run over data.max_reject_fraction: how many, the main cause, where to look."""
    cause = manifest["dominant_reject_cause"]
    return (f"{manifest['rejected']} of {manifest['planned']} planned conversations "
            f"({manifest['reject_fraction']:.0%}) were rejected, more than data.max_reject_fraction="
            f"{manifest['max_reject_fraction']} allows; most common cause: {cause['cause']} "
            f"({cause['count']} conversations), e.g. {cause['example']!r}; every reject is in "
            f"{output_dir / 'rejects.jsonl'}; fix the cause and run again (written conversations are kept)")


def write_manifest(output_dir: Path, plan: list[PlanItem], settings: dict, run: dict) -> dict:
    """Reconcile the plan with the shards and rejects on disk, then write manifest.json and the stats."""
    written = written_ids(output_dir)
    rejects = read_rejects(output_dir)
    planned_ids = {item.id for item in plan}
    written_planned = planned_ids & set(written)
    rejected_planned = {item_id for item_id in planned_ids & set(rejects) if item_id not in written}
    missing = sorted(planned_ids - written_planned - rejected_planned)
    reject_fraction = len(rejected_planned) / len(planned_ids) if planned_ids else 0.0
    max_reject_fraction = settings["data"]["max_reject_fraction"]
    table = read_index(output_dir)
    stats = write_report(output_dir, table, TimingConfig(**settings["data"]["speech"].get("timing", {})))
    per_persona = collections.Counter(table.column("persona_id").to_pylist())
    per_scenario = collections.Counter(table.column("scenario_id").to_pylist())
    planned_per_persona = collections.Counter(item.persona_id for item in plan)
    manifest = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "status": run_status(missing, reject_fraction, max_reject_fraction),
        "planned": len(planned_ids),
        "written": len(written_planned),
        "rejected": len(rejected_planned),
        "reject_fraction": reject_fraction,
        "max_reject_fraction": max_reject_fraction,
        "dominant_reject_cause": dominant_reject_cause([rejects[item_id] for item_id in sorted(rejected_planned)]),
        "missing": missing,
        "reconciled": len(planned_ids) == len(written_planned) + len(rejected_planned),
        "rows_outside_plan": len(set(written) - planned_ids),
        "run": run,
        "per_persona": dict(sorted(per_persona.items())),
        "per_scenario": dict(sorted(per_scenario.items())),
        "under_planned_personas": per_persona_problems(
            {p: per_persona.get(p, 0) for p in planned_per_persona}, min(planned_per_persona.values(), default=0)),
        "hours_of_audio": stats["hours_of_conversation"],
        "rejects_by_reason": dict(collections.Counter(reason_tag(rejects[i]["reason"]) for i in rejected_planned)),
        "rejects_by_stage": dict(collections.Counter(rejects[i]["stage"] for i in rejected_planned)),
        "alignment": settings["data"]["alignment"],
        "late_words": stats["alignment"]["late_words"],
        "interpolated_words": stats["alignment"]["interpolated_words"],
        "seed": settings["data"]["seed"],
        "shards": [path.name for path in shard_files(output_dir)],
        "stats": stats,
        "config": settings,
        "versions": versions(),
    }
    with (output_dir / "rejects.jsonl").open("w") as table_file:  # the rejects table, one record per id
        for item_id in sorted(rejected_planned):
            table_file.write(json.dumps(rejects[item_id]) + "\n")
    temporary = output_dir / ".manifest.json.tmp"
    temporary.write_text(json.dumps(manifest, indent=2))
    os.replace(temporary, output_dir / "manifest.json")
    return manifest
