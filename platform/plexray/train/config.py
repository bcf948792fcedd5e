"""The `train` config section: data, loss weights, LoRA, optimisation, Ray Train scaling, checkpoints."""

from __future__ import annotations

import typing as tp

import pydantic

from plexray.config import StrictModel


class LossConfig(StrictModel):
    """Weighted cross-entropy over the text stream and the audio codebooks (see plexray.train.loss)."""

    preset: tp.Literal["personaplex", "moshi-finetune", "semantic-x100"] = pydantic.Field(
        "personaplex", description="named weight set; the weight keys below override single values of it")
    text_weight: float | None = pydantic.Field(None, ge=0, description="weight of a non-padding text token")
    text_padding_weight: float | None = pydantic.Field(
        None, ge=0, description="weight of a text padding token (ids 3 and 0)")
    semantic_weight: float | None = pydantic.Field(None, ge=0, description="weight of audio codebook 0")
    acoustic_weight: float | None = pydantic.Field(None, ge=0, description="weight of audio codebooks 1-7")
    user_audio_weight: float | None = pydantic.Field(
        None, ge=0, description="multiplier for the user stream's codebooks (PersonaPlex depformer steps 8-15; "
                                "0 ignores them)")
    mask_prompt: bool = pydantic.Field(True, description="leave the prompt-phase frames out of the loss")


class LoraConfig(StrictModel):
    """LoRA adapters (peft) on the LM; the base weights stay frozen."""

    enabled: bool = pydantic.Field(True, description="false: full fine-tuning of every LM weight")
    rank: int = pydantic.Field(16, ge=1)
    alpha: float = pydantic.Field(32.0, gt=0, description="scaling = alpha / rank")
    dropout: float = pydantic.Field(0.0, ge=0, lt=1)
    target_modules: tp.Literal["attention-gating", "all-linear"] = pydantic.Field(
        "attention-gating", description="attention-gating: attention projections and gating linears of the "
                                        "temporal transformer and the depformer; all-linear: every Linear")
    train_embeddings: bool = pydantic.Field(False, description="also train the token embeddings (fully)")


class OptimConfig(StrictModel):
    """AdamW with linear warmup then cosine decay, gradient clipping."""

    lr: float = pydantic.Field(2e-5, gt=0, description="peak learning rate")
    depformer_lr: float | None = pydantic.Field(
        None, gt=0, description="peak learning rate of the depformer (PersonaPlex used 2x the temporal one); "
                                "default: lr")
    weight_decay: float = pydantic.Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = pydantic.Field(10, ge=0)
    min_lr_ratio: float = pydantic.Field(0.1, ge=0, le=1, description="cosine decays to lr * this")
    grad_clip: float = pydantic.Field(1.0, gt=0, description="max global gradient norm")


class TrainConfig(StrictModel):
    """Fine-tuning a PersonaPlex/Moshi LM on a plexray training set with Ray Train."""

    dataset: str = pydantic.Field("artifacts/data", description="training set directory (holds shards/*.parquet)")
    validation_fraction: float = pydantic.Field(
        0.1, ge=0, lt=1, description="share of conversations held out for validation (split by id hash)")
    output_dir: str = pydantic.Field("artifacts/train", description="runs are written under this directory")
    run_name: str = pydantic.Field("run", pattern=r"^[A-Za-z0-9_.-]+$",
                                   description="a rerun with the same name resumes from its last checkpoint")
    max_frames: int = pydantic.Field(
        2048, ge=8, description="frames of a training sequence, capped at the LM context; a longer conversation "
                                "is trained as overlapping windows, each [its prompt][a slice of the conversation] "
                                "(docs/long-calls.md); shorter ones are padded (-1)")
    batch_size: int = pydantic.Field(2, ge=1, description="conversations per worker per micro-batch")
    grad_accumulation: int = pydantic.Field(1, ge=1)
    max_steps: int = pydantic.Field(100, ge=1, description="optimizer steps")
    eval_every: int = pydantic.Field(20, ge=1, description="evaluate (and checkpoint) every N optimizer steps")
    eval_batches: int | None = pydantic.Field(None, ge=1, description="cap on validation batches per evaluation")
    keep_checkpoints: int = pydantic.Field(2, ge=1, description="Ray keeps this many, the best by validation loss")
    seed: int = 0
    num_workers: int = pydantic.Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = pydantic.Field(1.0, gt=0)
    fsdp: bool = pydantic.Field(True, description="shard the model with FSDP across workers (when > 1)")
    bf16: bool = pydantic.Field(True, description="bfloat16 autocast on GPU (ignored on CPU)")
    gradient_checkpointing: bool = False
    max_failures: int = pydantic.Field(2, ge=0, description="worker failures Ray Train recovers from")
    max_nonfinite_steps: int = pydantic.Field(
        5, ge=1, description="stop after this many consecutive steps with a non-finite loss")
    evaluate_behaviour: bool = pydantic.Field(
        False, description="when the run finishes, compare the base model and the run's best checkpoint by "
                           "behaviour on the serving engine (the `evaluation` section; report in "
                           "<run>/behaviour/step-N, its digest in train_summary.json)")
    loss: LossConfig = LossConfig()
    lora: LoraConfig = LoraConfig()
    optim: OptimConfig = OptimConfig()
    fail_at_step: int | None = pydantic.Field(
        None, ge=1, description="testing aid: the rank-0 worker process exits at the start of this step, unless "
                                "it resumed from a checkpoint (to register, a checkpoint needs one more step)")
