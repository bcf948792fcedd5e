"""`plexray data generate`: the Ray Data pipeline from plan to shards, resumable.

plan -> skip ids already in readable shards -> synthesize (Ray tasks, one conversation each)
-> encode (Ray actors holding Mimi, batched) -> Parquet shards -> manifest.json + stats.
Rejects and quarantined items are written by the workers as they happen, so a crash loses
nothing: the next run reconciles what is on disk and does only what is missing.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
import typing as tp
from pathlib import Path

from plexray.data.errors import DataError
from plexray.data.grounding import ground_plan, model_token_counter, with_passages
from plexray.data.manifest import reject_limit_message, write_manifest
from plexray.data.personas import load_library
from plexray.data.plan import PlanItem, plan_conversations
from plexray.data.shards import SHARDS_DIR, written_ids
from plexray.data.stages import ConversationEncoder, synthesize_item
from plexray.data.tts import check_tts
from plexray.model import reference

logger = logging.getLogger(__name__)


class PartFilenames:
    """`part-<time>-<write uuid>-<task>-<block>.parquet`: the contract's pattern, unique per run.

    Ray refuses appending names without its write uuid (they could overwrite each other).
    """

    def __init__(self):
        self.started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")

    def get_filename_for_block(self, block, write_uuid: str, task_index: int, block_index: int) -> str:
        return f"part-{self.started}-{write_uuid}-{task_index:05d}-{block_index:05d}.parquet"

    def get_filename_for_row(self, row, write_uuid: str, task_index: int, block_index: int, row_index: int) -> str:
        return f"part-{self.started}-{write_uuid}-{task_index:05d}-{block_index:05d}-{row_index:05d}.parquet"


def run_pipeline(items: list[dict], first_stage: tp.Callable[[dict], list[dict]], config, output_dir: Path) -> None:
    """first_stage (item -> [audio row], in Ray tasks) -> encode (actors) -> shards, with Ray Data.

    Connects to the cluster in RAY_ADDRESS (e.g. under `ray job submit`) or starts a local one.
    """
    import ray

    if not ray.is_initialized():
        ray.init()
    data = config.data
    dataset = ray.data.from_items(items, override_num_blocks=len(items))  # one task per conversation
    dataset = dataset.flat_map(first_stage, num_cpus=1)
    dataset = dataset.map_batches(
        ConversationEncoder,
        fn_constructor_kwargs={"model": config.model, "config": data, "output_dir": str(output_dir)},
        batch_size=data.encode.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=data.encode.num_actors),
        num_cpus=data.encode.num_cpus_per_actor,
        num_gpus=data.encode.num_gpus_per_actor,
    )
    dataset.write_parquet(str(output_dir / SHARDS_DIR), filename_provider=PartFilenames(),
                          min_rows_per_file=data.rows_per_shard)


def run_and_reconcile(plan: list[PlanItem], items: list[dict], first_stage, config, output_dir: Path) -> dict:
    """Run the pipeline on the items not yet written, then write the manifest (also when it fails).

    Raises DataError when the run failed, or rejected more of the plan than data.max_reject_fraction.
    """
    existing = written_ids(output_dir)
    todo = [item for item in items if item["id"] not in existing]
    run = {"skipped_existing": len(items) - len(todo), "attempted": len(todo), "error": None}
    logger.info("plan: %d conversations, %d already written, %d to do", len(items), run["skipped_existing"],
                len(todo))
    try:
        if todo:
            run_pipeline(todo, first_stage, config, output_dir)
    except Exception as exc:  # record what got done before failing: the next run resumes from it
        run["error"] = f"{type(exc).__name__}: {exc}"
        manifest = write_manifest(output_dir, plan, config.model_dump(mode="json"), run)
        raise DataError(f"pipeline failed ({run['error']}); {manifest['written']} of {manifest['planned']} "
                        f"conversations are written; run again to resume") from exc
    manifest = write_manifest(output_dir, plan, config.model_dump(mode="json"), run)
    if manifest["status"] == "too_many_rejects":
        raise DataError(reject_limit_message(manifest, output_dir))
    return manifest


def prepare(config) -> tuple[tp.Any, Path]:
    """Absolute output dir (workers run in another cwd) and the checkpoint resolved once, here:
    `demo` is built if needed and a hub ref downloaded, instead of racing in every actor."""
    output_dir = Path(config.data.output_dir).expanduser().resolve()
    (output_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    checkpoint = reference.resolve(config.model.checkpoint, config.model.cache_dir).source
    config = config.model_copy(update={"model": config.model.model_copy(update={"checkpoint": checkpoint})})
    return config, output_dir


def generate(config) -> dict:
    """Generate (or resume) the dataset described by `config` (a PlexrayConfig); returns the manifest."""
    data = config.data
    library = load_library(data.library.persona_files, data.library.scenario_files,
                           data.library.personas, data.library.scenarios)  # bad files fail fast, before any work
    check_tts(data.speech.tts, library.personas, library.scenarios)  # as does an endpoint channel left unset
    plan = plan_conversations(data, library)
    config, output_dir = prepare(config)
    data = config.data
    stage = functools.partial(synthesize_item, config=data, library=library, output_dir=output_dir)
    grounded = ground_plan(plan, library, config.knowledge, model_token_counter(config.model))
    items = with_passages([dataclasses.asdict(item) for item in plan], grounded)
    return run_and_reconcile(plan, items, stage, config, output_dir)
