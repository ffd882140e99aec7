"""The engine: everything an application shares (store, sampler, rewards, GSPO, trainer, checkpoints, nightly, CLI)."""
