"""tally's ingest: the rows of a JSON-lines or CSV file of prior items, stored as `tally_items`.

Reading the file again changes only what changed in it; a row that cannot be read costs that row (kept
with its reason in `tally_rejects`); a file that cannot be read at all raises TallyFileError. An item's day
is its created time's day in `timezone`. In detail: docs/tally.md ("The modules, in detail").
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlite_utils

from varro.engine.core.errors import UserError
from varro.engine.core.paths import caller_path
from varro.engine.prompts.sources import resolve_timezone
from varro.engine.store import utc_now

from .settings import TallyConfig

SUFFIXES = (".jsonl", ".csv")
# Lone surrogates: a JSON "\ud800" escape, or (from the surrogateescape decoding) a byte that is not UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class TallySettingsError(ValueError, UserError):
    """A [tally] setting cannot be used as given (a counts spec, a prompt template); the message names it."""


class TallyFileError(ValueError, UserError):
    """The items file cannot be read at all: missing, not text, an unknown kind, a header without a
    needed column, or not one row readable as an item."""


class RowError(ValueError):
    """One row cannot be read as an item; it is skipped and recorded."""


def parse_counts(spec: str) -> list[tuple[str, float]]:
    """'saves=1,shares=2' as [('saves', 1.0), ('shares', 2.0)]. Raises TallySettingsError."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        name, eq, weight = part.partition("=")
        try:
            w = float(weight) if eq else math.nan
        except ValueError:
            w = math.nan
        if not name.strip() or not math.isfinite(w) or w < 0:
            raise TallySettingsError(f"counts must be column=weight pairs with weights >= 0, like "
                                     f"'saves=1,shares=2'; got {spec!r}")
        out.append((name.strip(), w))
    if len({n for n, _ in out}) != len(out):
        raise TallySettingsError(f"counts names a column twice: {spec!r}")
    return out


@dataclass(frozen=True)
class Columns:
    """Which column of the file is what (from the [tally] settings)."""
    group: str
    author: str
    text: str
    time: str
    counts: tuple[tuple[str, float], ...]  # (column, weight)
    title: str = ""
    description: str = ""
    id: str = ""
    age: str = ""

    @classmethod
    def of(cls, s: TallyConfig) -> "Columns":
        return cls(s.group_column, s.author_column, s.text_column, s.time_column, tuple(parse_counts(s.counts)),
                   s.title_column, s.description_column, s.id_column, s.age_column)

    @property
    def required(self) -> list[str]:
        return [c for c in (self.group, self.author, self.text, self.time, self.id) if c]


def _records(path: Path, cols: Columns) -> Iterator[tuple[int, dict | None, str, str]]:
    """(line, record, its raw text, why it is not a record: '' when it is) per row of the file.
    Raises TallyFileError when the file cannot be read at all."""
    if path.suffix.lower() not in SUFFIXES:
        raise TallyFileError(f"{path}: an items file is .jsonl (JSON lines) or .csv, not "
                             f"{path.suffix or 'no suffix'!r}")
    try:
        # Bytes that are not UTF-8 become lone surrogates, so they cost their own row (see _bad_bytes).
        text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    except FileNotFoundError:
        raise TallyFileError(f"no items file at {path}") from None
    except IsADirectoryError:
        raise TallyFileError(f"{path} is a folder, not an items file") from None
    lines = text.splitlines()
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if _SURROGATE.search(line):
                yield n, None, printable(line), _bad_bytes(line)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, None, line, f"not valid JSON: {e}"
                continue
            if isinstance(record, dict):
                yield n, record, line, ""
            else:
                yield n, None, line, f"a JSON {type(record).__name__}, not an object"
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in cols.required + [name for name, _ in cols.counts] if c not in (reader.fieldnames or [])]
    if missing:
        raise TallyFileError(f"{path}: the header {reader.fieldnames} lacks the columns {missing} (name them "
                             "under [tally] or with --group-column, --counts, ...)")
    end = reader.line_num
    for record in reader:
        start, end = end, reader.line_num
        raw = "\n".join(lines[start:end])
        bad = _bad_bytes(raw) if _SURROGATE.search(raw) else "more fields than the header" if None in record else ""
        yield end, record, printable(raw), bad


def _bad_bytes(line: str) -> str:
    """Why a row holding undecodable bytes (surrogate-escaped) is not an item, naming the first byte."""
    first = _SURROGATE.search(line)
    return f"not UTF-8 text (byte 0x{ord(first.group()) - 0xDC00:02x} at character {first.start()})"


def printable(text: str) -> str:
    """`text` with its lone surrogates as U+FFFD, so SQLite can store it (a raw row kept in tally_rejects)."""
    return _SURROGATE.sub("\ufffd", text)


def _text(record: dict, column: str, required: bool) -> str:
    value = record.get(column) if column else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a numeric key or title
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowError(f"no {column!r}")
        return ""
    if not isinstance(value, str):
        raise RowError(f"{column!r} is {type(value).__name__}, not text")
    if _SURROGATE.search(value):  # SQLite cannot store it: the whole file's transaction would roll back
        raise RowError(f"{column!r} holds a lone surrogate escape (like \\ud800), not text")
    return value.strip()


def _number(record: dict, column: str) -> float | None:
    """A non-negative number, None when the row gives none (the count is unknown, not zero)."""
    value = record.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RowError(f"{column!r} is {value!r}, not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{column!r} is {value!r}, not a number") from None
    if not math.isfinite(x) or x < 0:
        raise RowError(f"{column!r} is {value!r}, not a non-negative number")
    return int(x) if x.is_integer() else x


def parse_created(value: str, zone: tzinfo | None) -> tuple[str, str]:
    """(created_utc, local day) of an ISO 8601 time; a date alone is that day (at midnight). A time without
    an offset is in `zone`. Raises RowError, also for a time whose UTC or local date is outside years 1-9999."""
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            moment = datetime(d.year, d.month, d.day, tzinfo=zone) if zone else datetime(d.year, d.month, d.day)
            return _utc(moment), d.isoformat()
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone) if zone else moment.astimezone()
        local = moment.astimezone(zone) if zone else moment.astimezone()
        return _utc(moment), local.date().isoformat()
    except ValueError:
        raise RowError(f"created time {value!r} is not ISO 8601 (like 2026-11-02T09:30:00Z)") from None
    except OverflowError:  # 9999-12-31T23:00-14:00 is in year 10000 in UTC
        raise RowError(f"created time {value!r} is out of range: its UTC or local date is outside years "
                       "1-9999") from None


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def item_row(record: dict, line: int, cols: Columns, zone: tzinfo | None, file: str) -> dict[str, Any]:
    """The `tally_items` row of one record of the file. Raises RowError naming what is wrong."""
    group = _text(record, cols.group, True)
    author = _text(record, cols.author, True)
    text = _text(record, cols.text, True)
    created_utc, day = parse_created(_text(record, cols.time, True), zone)
    counts = {name: _number(record, name) for name, _ in cols.counts}
    age = _number(record, cols.age) if cols.age else None
    if age is not None and age <= 0:
        raise RowError(f"{cols.age!r} is {age}: counts are read at an age above 0 hours")
    key = _text(record, cols.id, True) if cols.id else hashlib.sha1(
        json.dumps([group, author, created_utc, text]).encode()).hexdigest()[:20]
    return {"id": key, "group_key": group, "author": author, "text": text,
            "title": _text(record, cols.title, False), "description": _text(record, cols.description, False),
            "created_utc": created_utc, "day": day, "counts_json": json.dumps(counts),
            "counts_age_hours": None if age is None else float(age), "file": file, "line": line}


@dataclass
class FileRead:
    rows: list[dict]  # one per item, the first of repeats
    rejects: list[dict]  # {"line", "reason", "raw"}


def read_items(path: str | Path, cols: Columns, zone: tzinfo | None) -> FileRead:
    """Every item of the file and every row that is not one. Raises TallyFileError when the file is empty, no
    row is an item, or a count column appears in no row (a misnamed column would silently zero the weights)."""
    path = Path(path).expanduser().resolve()
    rows, rejects, seen = [], [], {}
    for line, record, raw, bad in _records(path, cols):
        try:
            if bad:
                raise RowError(bad)
            row = item_row(record, line, cols, zone, str(path))
            if row["id"] in seen:
                raise RowError(f"the same item as line {seen[row['id']]}")
        except RowError as e:
            rejects.append({"line": line, "reason": str(e), "raw": raw[:2000]})
            continue
        seen[row["id"]] = line
        rows.append(row)
    if not rows and not rejects:
        raise TallyFileError(f"{path} holds no items: an items file has one item a line (JSONL) or a header and a "
                             "row per item (CSV)")
    if not rows:
        first = "; ".join(f"line {r['line']}: {r['reason']}" for r in rejects[:3])
        raise TallyFileError(f"{path}: none of its {len(rejects)} rows is an item ({first})")
    for name, _ in cols.counts:
        if rows and all(json.loads(r["counts_json"])[name] is None for r in rows):
            raise TallyFileError(f"{path}: no row has a value in the count column {name!r}; "
                                 f"check --counts ({', '.join(n for n, _ in cols.counts)})")
    return FileRead(rows, rejects)


_UPSERT = (
    "insert into tally_items (id, group_key, author, text, title, description, created_utc, day, counts_json, "
    "counts_age_hours, file, line, first_seen_utc, updated_utc) values (:id, :group_key, :author, :text, :title, "
    ":description, :created_utc, :day, :counts_json, :counts_age_hours, :file, :line, :now, :now) "
    "on conflict(id) do update set counts_json = excluded.counts_json, counts_age_hours = excluded.counts_age_hours, "
    "title = excluded.title, description = excluded.description, file = excluded.file, line = excluded.line, "
    "updated_utc = excluded.updated_utc "
    "where tally_items.counts_json is not excluded.counts_json "
    "or tally_items.counts_age_hours is not excluded.counts_age_hours or tally_items.title is not excluded.title "
    "or tally_items.description is not excluded.description"
)


def store_items(db: sqlite_utils.Database, read: FileRead, file: str, day: str) -> int:
    """Upsert the items of `day` and before, and replace the file's rejects; returns how many items are new."""
    now = utc_now()
    new = 0
    with db.atomic():
        for row in read.rows:
            if row["day"] > day:
                continue
            new += db.execute("select 1 from tally_items where id = ?", [row["id"]]).fetchone() is None
            db.execute(_UPSERT, {**row, "now": now})
        kept = {r["line"]: r["raw"] for r in db.query("select line, raw from tally_rejects where file = ?", [file])}
        current = {r["line"]: r for r in read.rejects}
        for line, raw in kept.items():
            if line not in current or current[line]["raw"] != raw:
                db.execute("delete from tally_rejects where file = ? and line = ?", [file, line])
        db["tally_rejects"].insert_all(
            [{"file": file, **r, "first_seen_utc": now} for line, r in current.items()
             if kept.get(line) != r["raw"]], pk=("file", "line"))
    return new


def ingest_file(db: sqlite_utils.Database, path: str | Path, day: str, settings: TallyConfig,
                echo: Callable[[str], None] = lambda _: None) -> int:
    """Read the items file and store its items of `day` and before; returns how many are new.

    Raises TallyFileError when the file cannot be read at all, TallySettingsError for unusable settings.
    """
    if not str(path):
        raise TallyFileError("no items file: set [tally] items = 'path/to/items.jsonl' or pass --items")
    file = str(caller_path(path))  # a relative path is from the folder the command was run in
    read = read_items(file, Columns.of(settings), resolve_timezone(settings.timezone or None))
    new = store_items(db, read, file, day)
    later = sum(r["day"] > day for r in read.rows)
    echo(f"tally: {len(read.rows)} items in {file}, {new} new"
         + (f", {later} after {day} left for their day" if later else "")
         + (f"; {len(read.rejects)} rows skipped (see the tally_rejects table)" if read.rejects else ""))
    return new
