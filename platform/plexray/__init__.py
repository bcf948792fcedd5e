"""plexray: PersonaPlex fine-tuning and serving on Ray."""
