"""Dialogue scripts: one interface, an embedded offline generator and an LLM backend, plus validation."""
