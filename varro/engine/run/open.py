"""What `step` and `nightly` share before any work: a run opened for a day.

`open_run` settles the run's config (run.toml, varro.engine.run.identity, with
the command line's changes), its notices, the owner check, the database and
the embedder. Under mlx.launch rank 0 settles the run and the other ranks
receive its config (they get no database).
"""

from __future__ import annotations

from varro.engine import store
from varro.engine.core.app import App
from varro.engine.core.config import Config
from varro.engine.core.paths import db_path, run_dir
from varro.engine.embed.embedders import CachedEmbedder, load_embedder
from varro.engine.model.loading import check_model
from varro.engine.run.checkpoints import check_run_owner, list_checkpoints, run_config
from varro.engine.run.identity import read_run, settle


def open_run(app: App, cfg: Config, named: dict[str, set[str]], run: str, home: str | None, day: str, world=None,
             source: str = ""):
    """(the run's config, its notices, the database, the embedder) for `day`; the last two None on a rank
    other than 0. `cfg` is what the command line, --config and the defaults resolve to, `named` the settings
    they name (varro.engine.cli.options.named_settings). Raises RunIdentityError, CheckpointError or
    ModelLoadError before anything is written for another app's run, another base model or a missing model."""
    main = world is None or world.is_main
    path = run_dir(run, home)
    notices: list[str] = []
    if main:
        app.preflight(cfg, source, home)  # credentials and the like, before the model
    if main:
        check_run_owner(path, app.name, None)  # another app's checkpoints, before run.toml is written or read
        stored = read_run(path)
        legacy = run_config(path, Config()) if stored is None and list_checkpoints(path) else None  # before run.toml
        # the model the night will load, checked before a first night writes it into run.toml
        if "model" in named.get("model", set()):
            check_model(cfg.model.model)
        else:
            check_model(stored["model"] if stored else legacy.model.model if legacy else cfg.model.model)
        cfg, notices = settle(app.name, run, path, cfg, named_values(cfg, named), day, store.utc_now(), legacy)
        check_run_owner(path, app.name, cfg.model.model)
    if world is not None and world.distributed:
        cfg = Config.from_dict(world.broadcast_json(cfg.to_dict() if main else None))
        notices = world.broadcast_json(notices if main else None)
    if not main:
        return cfg, notices, None, None
    db = store.open_db(db_path(home))
    return cfg, notices, db, CachedEmbedder(load_embedder(getattr(cfg, app.name).embedder), db)


def named_values(cfg: Config, named: dict[str, set[str]]) -> dict[str, dict]:
    """{section: {name: resolved value}} of the settings the command line or --config named."""
    sections = cfg.sections()
    return {s: {n: getattr(sections[s], n) for n in names} for s, names in named.items()}
