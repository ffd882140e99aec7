"""The training stage's typed error.

`TrainingError` is bad input to a day's update (a rollout without a reward, an empty completion, a model or
collaborator the trainer cannot use), raised with the offending values; the CLI reports it in one line.
"""

from __future__ import annotations

from varro.engine.core.errors import UserError


class TrainingError(RuntimeError, UserError):
    pass
