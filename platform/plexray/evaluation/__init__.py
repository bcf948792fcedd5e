"""Behavioural evaluation: test conversations run through the serving engine, scored for turn-taking, interruptions, backchannels and role adherence."""
