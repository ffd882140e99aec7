"""JSON-lines files the engine and the apps ship (the sample, the honest references), read strictly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each non-blank line of `path`. Raises FileNotFoundError, and ValueError naming
    `path:line` for a line that is not valid JSON."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
