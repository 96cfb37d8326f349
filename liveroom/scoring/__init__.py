"""The scoring app: pitches -> jobs for the engine, the score and batch commands, collect."""
