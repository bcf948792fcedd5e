"""Data generation: personas -> dialogues -> speech -> Mimi codes -> training shards (Ray Data)."""
