"""Configuration: one dataclass per concern, each field with its default and help.

The defaults are the recipe we stand behind. The CLI builds its options from
these fields (see `varro.engine.cli.options`), so the help text lives here only.
Precedence: command line, then a TOML config file, then these defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from varro.engine.core.errors import ConfigError
from varro.engine.core.paths import caller_path, looks_local


@dataclass(frozen=True)
class Allowed:
    """The values a numeric setting may take: from `low` (excluded when `open_low`) up to `high`."""
    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def admits(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        low = "" if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        high = "" if self.high is None else f"<= {self.high:g}"
        return " and ".join(p for p in (low, high) if p) or "any finite number"


POSITIVE = Allowed(0, open_low=True)  # a rate, a scale, a ceiling: 0 would make the setting meaningless
AT_LEAST_ONE = Allowed(1)  # a count of things the night needs at least one of
NON_NEGATIVE = Allowed(0)  # a weight, a count or a limit where 0 means none (or off)
SHARE = Allowed(0, 1)  # a share or probability (0: off, where the help says so)
COSINE = Allowed(-1, 1)


def opt(default: Any, help: str, allowed: Allowed | None = None) -> Any:
    """A dataclass field with a one-line help text for the CLI and, for a number, the values it allows
    (every float must be finite besides)."""
    return field(default=default, metadata={"help": help, "allowed": allowed})


@dataclass
class ModelConfig:
    model: str = opt("Qwen/Qwen3-0.6B", "mlx-lm model id or local path of the base model")
    enable_thinking: bool = opt(False, "render Qwen3's chat template with thinking on")
    fine_tune: str = opt("lora", "'lora' (adapters on a frozen base) or 'full'")
    lora_rank: int = opt(8, "LoRA rank", AT_LEAST_ONE)
    lora_layers: int = opt(16, "number of final transformer blocks that get LoRA adapters", AT_LEAST_ONE)
    lora_scale: float = opt(20.0, "LoRA scale (mlx-lm's 'scale', not alpha)", POSITIVE)


SAMPLER_PROFILES: dict[str, dict[str, float | int]] = {
    "tight": {"temp": 0.7, "top_p": 0.9, "top_k": 40},
    "default": {"temp": 1.0, "top_p": 0.95, "top_k": 0},
    "loose": {"temp": 1.2, "top_p": 1.0, "top_k": 0},
}


@dataclass
class SamplingConfig:
    group_size: int = opt(8, "completions sampled per prompt (the GSPO group)", Allowed(2))
    profile: str = opt("tight", "sampler profile: tight, default or loose")
    max_tokens: int = opt(180, "maximum completion tokens", AT_LEAST_ONE)

    def sampler_settings(self) -> dict[str, float | int]:
        if self.profile not in SAMPLER_PROFILES:
            raise ConfigError(
                f"unknown sampler profile {self.profile!r}; choose one of {sorted(SAMPLER_PROFILES)}"
            )
        return dict(SAMPLER_PROFILES[self.profile])


@dataclass
class TrainConfig:
    learning_rate: float = opt(1e-5, "AdamW learning rate", POSITIVE)
    weight_decay: float = opt(0.0, "AdamW weight decay", NON_NEGATIVE)
    grad_clip: float = opt(1.0, "clip the global gradient norm to this value", POSITIVE)
    minibatches: int = opt(4, "optimizer steps per rollout batch (later ones are off-policy)", AT_LEAST_ONE)
    micro_batch: int = opt(1, "completions differentiated at once on top of their prompt (0: all of the prompt's)",
                           NON_NEGATIVE)
    eps_low: float = opt(3e-4, "GSPO lower clip range of the sequence ratio", SHARE)
    eps_high: float = opt(4e-4, "GSPO upper clip range of the sequence ratio", NON_NEGATIVE)
    beta: float = opt(0.02, "weight of the KL leash to the base model (k2 term: the reverse KL's gradient; 0: off)",
                      NON_NEGATIVE)
    flat_std: float = opt(1e-3, "groups whose reward std is at most this carry no signal and are dropped",
                          NON_NEGATIVE)
    advantage_std: bool = opt(True, "divide each group's advantages by its reward std (off: r - mean only, "
                                    "as Turtel et al. 2025 found better on noisy outcomes)")
    is_cap: float = opt(0.0, "cap C of the truncated importance weight for the sampler's top-k/top-p (0: off)",
                        NON_NEGATIVE)
    pi_old: str = opt("auto", "pi_old of the off-policy minibatches: 'pass' (the trainer's own pass over every row) "
                              "or 'auto' (the sampler's stored log-probs when a pass on a few prompts agrees with "
                              "them within pi_old_tolerance, else the pass)")
    pi_old_check_prompts: int = opt(2, "'auto' pi_old: prompts the agreement check passes over", AT_LEAST_ONE)
    pi_old_check_rows: int = opt(2, "'auto' pi_old: rows of each checked prompt the check passes over (0: all of "
                                    "them)", NON_NEGATIVE)
    pi_old_tolerance: float = opt(1e-5, "'auto' pi_old: the largest gap in a sequence's mean log-prob between the "
                                        "sampler and the check's pass that still takes the sampler's", NON_NEGATIVE)
    kl_prompts: int = opt(2, "at beta 0 (the KL only logged, for the KL guard): prompts per minibatch whose rows "
                             "take the reference pass, the largest (0: every prompt)", NON_NEGATIVE)
    seed: int = opt(0, "seed for MLX, NumPy and Python", NON_NEGATIVE)
    kl_max: float = opt(1.0, "collapse guard: KL to the base above this (before any step or after the last) "
                             "discards the day's updates", POSITIVE)
    entropy_min_share: float = opt(0.5, "collapse guard: a day whose policy entropy falls below this share of "
                                        "the first day's is discarded (0: off)", SHARE)
    eval_drop_max: float = opt(0.2, "collapse guard: no training while the newest checkpoint scored on the held-out "
                                    "panel (by `eval`) is this far below the best scored before it", NON_NEGATIVE)
    memory_fraction: float = opt(0.8, "memory guard: share of the machine's free memory the night may use "
                                      "(0: no guard)", SHARE)
    decode_cache_gb: float = opt(1.0, "memory guard: fewer prompts decode together when their KV cache "
                                      "would take more than this many GB (0: no ceiling)", NON_NEGATIVE)
    swap_max_mb: int = opt(512, "swap watchdog: end the night once swap has grown this much (0: off)", NON_NEGATIVE)


@dataclass
class EvalConfig:
    panel_size: int = opt(32, "held-out prompts in a run's fixed evaluation panel (the earliest eval prompts)",
                          AT_LEAST_ONE)
    panel_samples: int = opt(4, "completions per panel prompt and checkpoint", AT_LEAST_ONE)
    panel_seed: int = opt(0, "sampling seed of the panel, the same for every checkpoint", NON_NEGATIVE)
    story_threshold: float = opt(0.55, "cosine at which an item joins the story of an earlier one", COSINE)
    story_window_days: int = opt(7, "days back an item can be linked to its story", NON_NEGATIVE)
    leak_cosine: float = opt(0.5, "a training prompt this similar to a held-out item (or a panel prompt to a "
                                  "training prompt) is left out: a story the linking split in two", COSINE)
    voice_drift_max: float = opt(0.3, "voice drift flag: a day whose cadence distance from the humans is more than "
                                      "this share over the first measured day's is flagged (0: off)", NON_NEGATIVE)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    apps: dict[str, Any] = field(default_factory=lambda: app_sections())  # each app's [name] section

    def __getattr__(self, name: str) -> Any:
        """An application's section: cfg.varro, cfg.walter, ..."""
        try:
            return self.__dict__["apps"][name]
        except KeyError:
            raise AttributeError(f"Config has no section {name!r}") from None

    def sections(self) -> dict[str, Any]:
        """Every section by name: the engine's four, then each registered application's."""
        engine = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "apps"}
        return {**engine, **self.apps}

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(section) for name, section in self.sections().items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        cfg = cls()
        cfg.update(data, origin="dict")
        return cfg

    def update(self, data: dict[str, Any], origin: str) -> None:
        """Overlay `data` ({section: {field: value}}) onto this config, checking names and types."""
        sections = self.sections()
        for section, values in data.items():
            if section not in sections:
                raise ConfigError(f"{origin}: unknown section [{section}]; known: {sorted(sections)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{origin}: [{section}] must be a table of settings")
            target = sections[section]
            known = {f.name: f for f in dataclasses.fields(target)}
            for name, value in values.items():
                if name not in known:
                    raise ConfigError(
                        f"{origin}: unknown setting {section}.{name}; known: {sorted(known)}"
                    )
                value = _coerce(value, type(known[name].default), f"{section}.{name}")
                check_allowed(value, known[name], f"{section}.{name}", origin)
                setattr(target, name, value)


def app_sections() -> dict[str, Any]:
    """A default section per registered application (varro.engine.core.app), by name."""
    from varro.engine.core.app import apps

    return {name: app.settings() for name, app in apps().items()}


def _coerce(value: Any, kind: type, name: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {kind.__name__}, got {value!r}")
    return value


def check_allowed(value: Any, setting: dataclasses.Field, name: str, origin: str) -> None:
    """Refuse a number the night cannot use (NaN, infinity, or outside the setting's `Allowed` range)
    before anything runs or is saved; raises ConfigError naming the setting, the value and the rule."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{origin}: {name} must be a finite number, got {value}")
    allowed = setting.metadata.get("allowed")
    if allowed is not None and not allowed.admits(value):
        raise ConfigError(f"{origin}: {name} must be {allowed}, got {value!r}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The tables of the TOML config file at `path`; raises ConfigError for a missing file, one that is not
    UTF-8 (naming the byte offset) or not valid TOML."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p} is not UTF-8 text: byte {e.start} is {e.object[e.start:e.end]!r}; "
                          "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None


def load_config(
    path: str | Path | None,
    overrides: dict[str, dict[str, Any]] | None = None,
    base: Config | None = None,
) -> Config:
    """`base` (default: the defaults), then the TOML file at `path` (if any), then `overrides`.

    Raises ConfigError for a missing or malformed file or an unknown setting.
    """
    cfg = base if base is not None else Config()
    if path is not None:
        cfg.update(read_config_file(path), origin=str(path))
    if overrides:
        cfg.update({k: v for k, v in overrides.items() if v}, origin="command line")
    absolute_model(cfg)
    return cfg


def absolute_model(cfg: "Config") -> None:
    """Make a local --model path absolute (from the caller's folder), so a saved config works anywhere."""
    if looks_local(cfg.model.model):
        cfg.model.model = str(caller_path(cfg.model.model))
