"""Rollouts: G completions per prompt, decoded in one batch over a shared-prefix cache."""
