"""What the engine needs from an application (`App`), and how applications are found (the `varro.apps`
entry points).

An app says who it is, its tables, its data, its task (prompts and their scoring), what a person reads and
its sample; the engine never names one. Every attribute and method: docs/engine.md ("The App interface").
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence
from varro.engine.core.errors import UserError

if TYPE_CHECKING:
    import click
    import sqlite_utils

ENTRY_POINT_GROUP = "varro.apps"

Migration = Callable[["sqlite_utils.Database"], None]


class AppError(LookupError, UserError):
    """No application by that name is registered, or one is registered wrongly."""


class App:
    """Subclass it, set the class attributes and implement the methods marked below."""

    name: ClassVar[str]
    title: ClassVar[str]  # one line for --help
    settings: ClassVar[type]  # dataclass of the [name] config section
    migrations: ClassVar[Sequence[tuple[str, Migration]]] = ()
    reward_delay_days: ClassVar[int] = 0
    sources: ClassVar[tuple[str, ...]] = ("sample",)
    metric_columns: ClassVar[tuple[str, ...]] = ()
    plotted: ClassVar[tuple[str, ...]] = ()
    main_components: ClassVar[tuple[str, ...]] = ()
    echo_component: ClassVar[str] = ""
    demo_run: ClassVar[str] = ""  # the run the demo writes [default: <name>-demo]
    examples: ClassVar[str] = ""  # the hacks its red team tries, for `hacks --help`
    metrics_note: ClassVar[str] = ""
    hack_margin: ClassVar[float] = 0.1  # `hacks`: how far below honest every hack must score on every prompt
    # settings of the app's section that decide which prompts a day gets (with the engine's story settings),
    # and whether the choice also depends on the run's own history (a curriculum): see varro.engine.loop.cycle
    prompt_settings: ClassVar[tuple[str, ...]] = ()
    skips_table: ClassVar[str] = ""  # the table where its ingest records what it skipped
    run_dependent_prompts: ClassVar[bool] = False  # one line above the demo's metrics table (what a row's day means)
    # parts imported only when asked for (a red team or a sample pulls in more than a nightly needs)
    sample_at: ClassVar[str] = ""  # the module of the shipped sample: sample_days(), load_sample_day(db, day)
    red_team_at: ClassVar[str] = ""  # "module:NAME" of the `hacks` catalogue; "" for none
    commands_at: ClassVar[str] = ""  # "module:NAME" of the list of the app's own commands; "" for none

    # --- data -----------------------------------------------------------------------------------
    def ingest_options(self) -> list[Callable]:
        """click option decorators added to `step`, `nightly` and `ingest` (e.g. --feed)."""
        return []

    def ingest(self, db: "sqlite_utils.Database", day: str, cfg: Any, source: str, home: Any,
               options: dict[str, Any], echo: Callable[[str], None]) -> int:
        """Store `day`'s data from `source` (one of `sources`); returns how many new items. Raises a typed
        error only when nothing could be read (one bad record costs that record)."""
        raise NotImplementedError

    def preflight(self, cfg: Any, source: str, home: Any) -> None:
        """Before any work (no model, no database): raise a UserError for what `source` lacks, e.g. credentials."""

    def missing_data(self, db: "sqlite_utils.Database", day: str, cfg: Any) -> str | None:
        """None when `day` can be run; else why not, in words (the day is skipped: no checkpoint)."""
        raise NotImplementedError

    # --- the task -------------------------------------------------------------------------------
    def choose_prompts(self, db: "sqlite_utils.Database", run: str, day: str, cfg: Any, embedder: Any,
                       rng: Any) -> list[dict]:
        """The day's prompt rows (id, app, day, split 'train'/'eval', text, source_json), stored once;
        later calls return the stored set."""
        raise NotImplementedError

    def score_texts(self, db: "sqlite_utils.Database", prompt: dict, texts: list[str], embedder: Any,
                    cfg: Any) -> list[dict]:
        """One components dict (with "reward") per text written for `prompt`. Raises LookupError when
        the prompt cannot be scored yet."""
        raise NotImplementedError

    def scorable(self, db: "sqlite_utils.Database", prompt: dict) -> bool:
        """Whether `prompt`'s completions can be scored now."""
        return True

    def targets(self, prompt: dict) -> str:
        """What scores `prompt`'s completions, in words (compare prints it)."""
        return "its stored history"

    # --- what a person reads ----------------------------------------------------------------------
    def day_metrics(self, comps: list[dict]) -> dict:
        """The app's per-day metrics from the components of a day's scored rollouts."""
        return {}

    def skipped_records(self, db: "sqlite_utils.Database", days: list[str]) -> dict[str, int]:
        """{day: how many records its ingest skipped and recorded} (a malformed post, an unreadable row),
        for the report; the records themselves are in the app's table named by `skips_table`."""
        return {}

    def human_items(self, db: "sqlite_utils.Database", day: str, cfg: Any) -> list[tuple[str, str]]:
        """(item id, text): the human text `day`'s completions are rewarded against (the voice stage)."""
        return []

    # --- the sample and the demo ------------------------------------------------------------------
    def sample_days(self) -> list[str]:
        """The sample's days, in order."""
        return self._sample().sample_days()

    def load_sample_day(self, db: "sqlite_utils.Database", day: str) -> int:
        """Store the sample's data of `day` as the ingest would; returns how many items are new."""
        return self._sample().load_sample_day(db, day)

    def _sample(self) -> Any:
        if not self.sample_at:
            raise NotImplementedError(f"{self.name} names no sample module (sample_at)")
        return importlib.import_module(self.sample_at)

    def demo_settings(self, cfg: Any, tiny: bool = False) -> Any:
        """The demo's settings on top of the engine's demo recipe for the real model (or, with `tiny`, the
        tiny one): smaller days, say; default: unchanged."""
        return cfg

    # --- optional -------------------------------------------------------------------------------
    def red_team(self) -> Any | None:
        """The `hacks` catalogue (varro.engine.rewards.redteam.RedTeam), or None."""
        return _imported(self.red_team_at) if self.red_team_at else None

    def commands(self) -> list["click.Command"]:
        """The app's own commands, added to the engine's on its command line."""
        return _imported(self.commands_at) if self.commands_at else []

    @property
    def default_run(self) -> str:
        return self.name

    def demo_run_name(self) -> str:
        return self.demo_run or f"{self.name}-demo"

    def __repr__(self) -> str:
        return f"<App {self.name}>"


def _imported(ref: str) -> Any:
    """The object `ref` names, "package.module:NAME" as in an entry point, importing its module."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


_REGISTERED: dict[str, App] = {}
_LOADED = False


def register(app: App) -> App:
    """Add `app` by hand (tests, scripts); entry points are read as well."""
    _REGISTERED[app.name] = app
    return app


def apps() -> dict[str, App]:
    """Every registered application by name: the `varro.apps` entry points plus `register`ed ones."""
    global _LOADED
    if not _LOADED:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                app = ep.load()
            except ImportError as e:
                raise AppError(f"the application {ep.name!r} ({ep.value}) cannot be imported: {e}") from e
            if not isinstance(app, App) or app.name != ep.name:
                raise AppError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} must name an App whose name is "
                               f"{ep.name!r}, got {app!r}")
            _REGISTERED.setdefault(app.name, app)
        _LOADED = True
    return dict(_REGISTERED)


def get_app(name: str) -> App:
    """The registered application `name`; raises AppError naming those that are."""
    found = apps()
    if name not in found:
        have = ", ".join(sorted(found)) or "none (is the project installed? run scripts/setup)"
        raise AppError(f"no application {name!r} is registered in {ENTRY_POINT_GROUP}; registered: {have}")
    return found[name]
