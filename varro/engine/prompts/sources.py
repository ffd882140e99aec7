"""What every application's ingest shares: a link's normal form and the zone that decides an item's day."""

from __future__ import annotations

from datetime import tzinfo
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from varro.engine.core.errors import ConfigError


class TimezoneError(ConfigError):
    """A timezone setting names no IANA zone."""


TRACKING_PREFIXES = ("utm_",)
TRACKING_PARAMS = {"fbclid", "gclid", "mc_cid", "mc_eid", "ref", "cmpid", "ocid", "smid", "igshid", "at_medium",
                   "at_campaign", "ns_campaign", "ns_mchannel", "s_cid"}


def normalise_link(url: str) -> str:
    """Lower-case scheme and host, no fragment, no tracking parameters, no trailing slash."""
    parts = urlsplit(url.strip())
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not k.lower().startswith(TRACKING_PREFIXES) and k.lower() not in TRACKING_PARAMS]
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, urlencode(query), ""))


def resolve_timezone(tz: str | None) -> tzinfo | None:
    """The zoneinfo zone named `tz`; None or "" means the machine's local zone. Raises TimezoneError for an unknown name."""
    if not tz:
        return None
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise TimezoneError(f"unknown timezone {tz!r}: use an IANA name such as 'Europe/Berlin'") from None
