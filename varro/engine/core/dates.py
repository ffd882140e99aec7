"""Days as the engine passes them around (YYYY-MM-DD strings): moving, ranging, spelling a span, and the
check that a day to run has begun."""

from __future__ import annotations

from datetime import date, timedelta

from varro.engine.core.errors import ConfigError


class FutureDayError(ConfigError):
    """step or nightly was asked for a day that has not begun."""


def shift(day: str, days: int) -> str:
    """`day` moved by `days` (negative: earlier)."""
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def day_range(first: str, last: str) -> list[str]:
    """Every day from `first` to `last` inclusive; raises ValueError when last < first."""
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    if b < a:
        raise ValueError(f"--to {last} is before --from {first}")
    return [(a + timedelta(days=k)).isoformat() for k in range((b - a).days + 1)]


def span(days: list[str]) -> str:
    """'2026-11-24..30' (same month), '2026-11-24..12-02' (same year), else both days in full; one day as is."""
    first, last = days[0], days[-1]
    if first == last:
        return first
    cut = 8 if first[:8] == last[:8] else 5 if first[:5] == last[:5] else 0
    return f"{first}..{last[cut:]}"


def require_past(day: str) -> str:
    """`day` (YYYY-MM-DD) when it is today or earlier; raises FutureDayError for a later day."""
    today = date.today().isoformat()
    if day > today:
        raise FutureDayError(f"{day} is in the future (today is {today}): a day is run once it has begun")
    return day
