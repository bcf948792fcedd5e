"""Serving: the batched streaming engine and the Ray Serve application around it."""
