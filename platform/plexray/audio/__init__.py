"""Audio helpers shared by data generation, demo checkpoints and serving."""
