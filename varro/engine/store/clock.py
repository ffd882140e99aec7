"""The one timestamp format every `*_utc` column holds."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds and a Z, e.g. 2026-11-02T04:00:00.000000Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
