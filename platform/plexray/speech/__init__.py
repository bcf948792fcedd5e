"""Speech tools shared by behavioural evaluation and the data pipeline: voice activity (Silero VAD) and timed words (ASR)."""
