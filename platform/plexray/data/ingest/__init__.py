"""`plexray data ingest`: recorded two-speaker conversations -> the same shards as `data generate`.

index.py (the JSONL index) -> recording.py (both channels read, checked, at 24 kHz) -> transcribe.py
(Silero VAD and ASR per channel in Ray Data actors; one transcript file per conversation, kept for
resume) -> conversation.py (speech-ratio gate, turns, system prompt, voice prompt: one audio row) ->
the generation pipeline's Mimi encoder and shard writer (data/pipeline.py). run.py is the Ray shell.
"""
