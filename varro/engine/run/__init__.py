"""A run: its identity (run.toml), its checkpoints, its policy resumed from the latest one.

open.open_run opens a run for a day: its settled config, notices, database and
embedder, as step and nightly need them.
"""
