"""Reading a run: the held-out panel, compare, metrics, voice, the report, the rollout log, drafts."""
