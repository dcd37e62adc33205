"""Run configuration: frozen dataclasses, TOML file < CLI flags, validated once.

Config file layout::

    [run]      input, out, stages, workers, backend, scheduler, shard_size, retries, max_pixels, profile
    [source]   layout, label_policy, labels = [...]; [source.aliases] 기쁨 = "happy"
    [compress] quality = 40, max_side = 0          # one table per stage: its Params fields
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from pipeline.sources import LAYOUTS, SourceOptions
from pipeline.sources.aihub import POLICIES
from stages.base import ORDER, STAGES, ConfigError, Params, ordered
from stages.images import DEFAULT_MAX_PIXELS

BACKENDS = ("sequential", "loky", "dask")


@dataclass(frozen=True)
class RunConfig:
    input: Path
    out: Path
    stages: tuple[str, ...]
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    backend: str = ""
    scheduler: str = ""
    shard_size: int = 0  # 0: from the item count (see runner.shard_size)
    retries: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: write WORK/reports/profile.csv: where the workers' time went, per step
    profile: bool = False
    source: SourceOptions = field(default_factory=SourceOptions)
    params: Mapping[str, Params] = field(default_factory=dict)

    @property
    def executor(self) -> str:
        """The joblib backend actually used."""
        if self.backend:
            return self.backend
        return "dask" if self.scheduler else ("loky" if self.workers > 1 else "sequential")


def stage_fields(name: str) -> list[tuple[dataclasses.Field[Any], type]]:
    """(field, python type) for every parameter of a registered stage."""
    cls = STAGES[name].Params
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def coerce(value: Any, typ: Any, what: str) -> Any:
    """A TOML or command-line value as the field's type."""
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(typing.get_args(typ)[0](v.strip() if isinstance(v, str) else v) for v in items if v != "")
        if typ in (int, float, str):
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return typ(value)
        if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
            return value
    except (TypeError, ValueError):
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"{what}: expected {name}, got {value!r}") from None
    return value


def load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: {e}") from None


def build(file: Mapping[str, Any], flags: Mapping[str, Any]) -> RunConfig:
    """Merge defaults < config file < flags (None means 'not given'), validate, freeze.

    ``flags`` keys: run options by name (``input``, ``workers``, ...), source options as
    ``source.<name>``, stage parameters as ``<stage>.<field>``.
    """
    unknown = set(file) - {"run", "source", *ORDER}
    if unknown:
        raise ConfigError(f"config: unknown table(s) {', '.join(sorted(unknown))}; known: run, source, {', '.join(ORDER)}")

    def layer(table: str, name: str) -> Any:
        flag = flags.get(name if table == "run" else f"{table}.{name}")
        return flag if flag is not None else file.get(table, {}).get(name)

    run_keys = {f.name for f in dataclasses.fields(RunConfig)} - {"source", "params"}
    _check_keys("run", file.get("run", {}), run_keys)
    _check_keys("source", file.get("source", {}), {f.name for f in dataclasses.fields(SourceOptions)})

    stages_raw = layer("run", "stages")
    stages_raw = "compress" if stages_raw is None else stages_raw  # given but empty is an error, not the default
    names = [s.strip() for s in (stages_raw.split(",") if isinstance(stages_raw, str) else stages_raw) if s.strip()]
    if not names:
        raise ConfigError(f"no stage given (--stages is empty); name at least one of: {', '.join(s for s in ORDER if s in STAGES)}")
    bad = [s for s in names if s not in STAGES]
    if bad:
        raise ConfigError(f"unknown stage(s) {', '.join(bad)}; available: {', '.join(s for s in ORDER if s in STAGES)}")
    stages = tuple(ordered(names))

    inp, out = layer("run", "input"), layer("run", "out")
    if not inp:
        raise ConfigError("no input: give --input DIR (or [run] input in the config file)")
    if not out:
        raise ConfigError("no output: give --out WORK (or [run] out in the config file)")
    inp, out = Path(inp).expanduser(), Path(out).expanduser()
    if not os.path.lexists(inp):
        raise ConfigError(f"input {inp} does not exist")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    ri, ro = inp.resolve(), out.resolve()
    if ri.is_dir() and (ro == ri or ri in ro.parents):
        raise ConfigError(f"--out {out} is inside --input {inp}; its outputs would be read as input next time")

    run = {k: coerce(v, int, f"run.{k}") for k in ("workers", "shard_size", "retries", "max_pixels") if (v := layer("run", k)) is not None}
    for k, lo in (("workers", 1), ("shard_size", 0), ("retries", 0), ("max_pixels", 1)):
        if k in run and run[k] < lo:
            raise ConfigError(f"{k.replace('_', '-')} must be >= {lo}, got {run[k]}")
    backend = str(layer("run", "backend") or "")
    scheduler = str(layer("run", "scheduler") or "")
    if backend and backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if scheduler and backend not in ("", "dask"):
        raise ConfigError("--scheduler only works with --backend dask")

    profile = coerce(layer("run", "profile") or False, bool, "run.profile")
    source = _source(file.get("source", {}), flags)
    params = {name: _params(name, file.get(name, {}), flags) for name in STAGES}
    cfg = RunConfig(inp, out, stages, backend=backend, scheduler=scheduler, profile=profile, source=source, params=params, **run)
    if cfg.executor == "dask":
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            raise ConfigError("the dask backend needs Dask: pip install 'dask[distributed]'") from None
    return cfg


def _check_keys(table: str, given: Mapping[str, Any], known: set[str]) -> None:
    extra = set(given) - known
    if extra:
        raise ConfigError(f"config [{table}]: unknown key(s) {', '.join(sorted(extra))}; known: {', '.join(sorted(known))}")


def _source(table: Mapping[str, Any], flags: Mapping[str, Any]) -> SourceOptions:
    def get(name: str, default: Any) -> Any:
        v = flags.get(f"source.{name}")
        return v if v is not None else table.get(name, default)

    layout = str(get("layout", "auto"))
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    policy = str(get("label_policy", "majority"))
    if policy not in POLICIES:
        raise ConfigError(f"label-policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    aliases = dict(table.get("aliases", {}))
    for pair in flags.get("source.aliases") or ():
        raw, sep, canon = pair.partition("=")
        if not sep or not raw or not canon:
            raise ConfigError(f"--alias takes RAW=LABEL, got {pair!r}")
        aliases[raw] = canon
    labels = coerce(get("labels", ()), tuple[str, ...], "source.labels")
    return SourceOptions(layout, tuple(sorted(aliases.items())), labels, policy)


def stage_params(stage: str, table: Mapping[str, Any], flags: Mapping[str, Any] | None = None) -> Params:
    """A stage's parameters from one TOML table (e.g. of WORK/run.toml) and *flags* (``<stage>.<field>``
    keys, None where not given, as pipeline.options makes them) over it, defaults for the rest."""
    return _params(stage, table, flags or {})


def _params(stage: str, table: Mapping[str, Any], flags: Mapping[str, Any]) -> Params:
    fields = stage_fields(stage)
    _check_keys(stage, table, {f.name for f, _ in fields})
    values = {}
    for f, typ in fields:
        v = flags.get(f"{stage}.{f.name}")
        v = v if v is not None else table.get(f.name)
        if v is not None:
            values[f.name] = coerce(v, typ, f"{stage}.{f.name}")
    try:
        return STAGES[stage].Params(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def to_toml(cfg: RunConfig) -> str:
    """The resolved configuration as TOML (written to WORK/run.toml)."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (tuple, list)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    run = {"input": str(cfg.input.resolve()), "out": str(cfg.out.resolve()), "stages": list(cfg.stages),
           "workers": cfg.workers, "backend": cfg.executor, "scheduler": cfg.scheduler,
           "shard_size": cfg.shard_size, "retries": cfg.retries, "max_pixels": cfg.max_pixels, "profile": cfg.profile}
    lines = ["[run]", *(f"{k} = {val(v)}" for k, v in run.items()), "", "[source]"]
    src = cfg.source
    lines += [f"layout = {val(src.layout)}", f"label_policy = {val(src.label_policy)}", f"labels = {val(src.labels)}"]
    lines += ["", "[source.aliases]", *(f"{val(k)} = {val(v)}" for k, v in src.aliases)]
    for name in ORDER:
        if name in cfg.params:
            lines += ["", f"[{name}]", *(f"{k} = {val(v)}" for k, v in dataclasses.asdict(cfg.params[name]).items())]
    return "\n".join(lines) + "\n"
