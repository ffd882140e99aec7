"""A run: its identity (run.toml), its checkpoints, its policy resumed from the latest one."""
