"""LoRA fine-tuning with Ray Train: loss, model wrapping, training loop, checkpoints, merge."""
