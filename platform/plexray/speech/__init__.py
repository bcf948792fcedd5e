"""Speech tools shared by behavioural evaluation and the data pipeline: voice activity and timed words."""
