"""The one kind of error a command reports as one line: `UserError`.

Every error the library raises on purpose (a bad setting, a missing run, a
feed that cannot be read, a model folder that is not a model) subclasses it,
with the offending values in its message. The command boundary
(`varro.engine.cli.commands.EngineGroup`) prints `error: <message>` on stderr and exits
1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the person running the command can fix; its message says what."""


class ConfigError(ValueError, UserError):
    """A configuration value or file is invalid."""
