"""Contracts every stage follows: Item, Outcome, ItemStage, DatasetStage, and the registry.

A stage is a class with a ``name``, a frozen ``Params`` dataclass (its configuration) and either a
per-item ``process`` (run inside the fused per-shard pass, on an already decoded image) or a
dataset-level ``run`` (run by the driver over the records every earlier stage kept), or both.
Fields of ``Params`` whose metadata says ``decide=True`` only decide from stored scores: changing
them re-runs ``run`` but never the per-item work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

from manifests.keys import key_to_relpath
from manifests.schema import FAILED, KEPT, REJECTED, STATUSES, check_reason
from stages.images import Decoded, View


class ConfigError(ValueError):
    """Bad usage or configuration: reported as one line, exit 2, before any work. It lives here, at
    the bottom, because stages raise it while validating their parameters and setting up."""

#: Canonical order of the stages; a run executes the asked ones in this order.
ORDER = ("compress", "crop", "ocr", "quality", "dedup", "split", "train")


@dataclass(frozen=True, slots=True)
class Item:
    """One source image.

    Attributes:
        key: stable, NFC-normalised relative path; unique in a run; the sort key everywhere.
        source: where it came from, for people: a path, or ``zip::member``.
        path: file to read (the zip file for a zip member).
        member: name of the zip member as stored, or ``""``.
        label: canonical label, or ``""`` when unknown.
        group: person/subject id for leak-free splits (``""``: the item is its own group).
        meta: dataset extras (gender, age, annotator labels and boxes, source split, ...).
        data: the encoded image itself when it has no file (FER2013 CSV rows).
    """

    key: str
    source: str
    path: str
    member: str = ""
    label: str = ""
    group: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one stage decided for one item.

    ``view`` is not stored: it is the image a stage hands to the stages after it in the same
    fused pass (the face crop, say). A list of outcomes with keys ``<key>#0``, ``<key>#1``, ...
    from ``process`` splits one item into several (one per face). ``blob`` is binary data for the
    stage's own dataset step (dedup's keypoints): stored beside the row in the part file, read back
    with ``Store.read_blobs`` and never part of the records a dataset step gets.
    """

    key: str
    status: str = KEPT
    reason: str = ""
    detail: str = ""
    artifact: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    view: View | None = field(default=None, compare=False, repr=False)
    blob: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.reason or self.status != KEPT:
            check_reason(self.reason)

    @classmethod
    def rejected(cls, key: str, reason: str, detail: str = "", **metrics: Any) -> Outcome:
        return cls(key, REJECTED, reason, detail, metrics=metrics)

    @classmethod
    def failed(cls, key: str, reason: str, detail: str = "") -> Outcome:
        return cls(key, FAILED, reason, detail)


@dataclass(frozen=True)
class Context:
    """What a per-item stage may use besides the item and its decoded image.

    Attributes:
        work: the workspace root; artifacts go below it.
        view: the image the previous stage handed on (e.g. the face crop), or None.
        upstream: outcomes of the earlier stages for this item, by stage name.
    """

    work: Path
    view: View | None = None
    upstream: Mapping[str, Outcome] = field(default_factory=dict)

    def artifact_path(self, folder: str, key: str, suffix: str) -> tuple[Path, str]:
        """Absolute path and workspace-relative name of an artifact for *key*."""
        rel = f"images/{folder}/{key_to_relpath(key, suffix)}"
        return self.work / rel, rel


@dataclass(frozen=True)
class Params:
    """Base of every stage's parameters (a frozen dataclass)."""


P = TypeVar("P", bound=Params)


class Stage(Generic[P]):
    """Base class, generic in the stage's parameters (``class Crop(Stage[CropParams])``); subclasses
    set ``name``/``Params`` and define ``process`` and/or ``run``.

    Its kind is a class attribute, set when the subclass is defined from what it overrides:
    ``per_item`` (it defines ``process``) and ``per_dataset`` (it defines ``run``).
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    #: Bump when the stage's output changes for the same parameters: invalidates old results.
    version: ClassVar[int] = 1
    #: Metrics copied into WORK/manifest.csv, in this order.
    columns: ClassVar[tuple[str, ...]] = ()
    #: Artifacts of this stage are the file users train on (the latest such stage wins).
    produces_file: ClassVar[bool] = False
    #: Has a per-item step (``process``), run in the fused per-shard pass.
    per_item: ClassVar[bool] = False
    #: Has a dataset step (``run``), run by the driver over what every earlier stage kept.
    per_dataset: ClassVar[bool] = False

    params: P

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.per_item = cls.process is not Stage.process
        cls.per_dataset = cls.run is not Stage.run

    def __init__(self, params: P | None = None) -> None:
        # A stage's Params is the class P stands for: its defaults.
        self.params = params if params is not None else cast(P, self.Params())
        self._ready = False

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def setup(self) -> None:
        """Load models and the like, once per worker process."""

    def process(self, item: Item, image: Decoded, ctx: Context) -> Outcome | list[Outcome]:
        raise NotImplementedError(f"{self.name} has no per-item step")

    def restore(self, item: Item, outcome: Outcome, ctx: Context) -> View | None:
        """Rebuild the ``view`` this stage handed on, from its stored outcome (on resume): the same
        pixels as ``process`` handed on."""
        return None

    def run(self, records: list[dict[str, Any]], work: Path) -> Iterator[Outcome]:
        """Dataset-level step over the records every earlier stage kept."""
        raise NotImplementedError(f"{self.name} has no dataset step")

    def missing_outputs(self, work: Path) -> str:
        """What the dataset step wrote to *work* that is no longer there ('': nothing). A step whose
        decision is stored but whose files were deleted runs again instead of being skipped."""
        return ""

    def __getstate__(self) -> dict[str, Any]:
        # Ship parameters to workers, never loaded models.
        return {"params": self.params}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.params = state["params"]
        self._ready = False


def param_dict(params: Params, *, decide: bool | None = None) -> dict[str, Any]:
    """Parameters as a plain dict; ``decide=False`` leaves out the decision-only fields."""
    out = {}
    for f in dataclasses.fields(params):
        if decide is not None and bool(f.metadata.get("decide")) != decide:
            continue
        out[f.name] = getattr(params, f.name)
    return out


C = TypeVar("C", bound=type)


class Registry(dict[str, Any]):
    """Backends by name (face detectors, text engines): a dict plus a decorator that sets the
    class's ``name``; a duplicate name is an error."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[C], C]:
        def deco(cls: C) -> C:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self[name] = cls
            return cls

        return deco


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def package_file(package: str, *parts: str) -> str:
    """Path of a data file shipped inside an installed package (model weights), found without
    importing the package; ImportError says what is missing."""
    import importlib.util
    import os

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {package} is not installed")
    path = os.path.join(next(iter(spec.submodule_search_locations)), *parts)
    if not os.path.isfile(path):
        raise ImportError(f"{package} is installed without its data file {'/'.join(parts)}")
    return path


S = TypeVar("S", bound=type[Stage[Any]])
STAGES: dict[str, type[Stage[Any]]] = {}


def register(cls: S) -> S:
    """Class decorator adding a stage to the registry; a duplicate name is an error."""
    if not (cls.per_item or cls.per_dataset):
        raise ValueError(f"stage {cls.name!r} defines neither process (per item) nor run (per dataset)")
    if cls.name in STAGES:
        raise ValueError(f"stage {cls.name!r} registered twice")
    if cls.name not in ORDER:
        raise ValueError(f"stage {cls.name!r} missing from stages.base.ORDER")
    STAGES[cls.name] = cls
    return cls


def ordered(names: Iterable[str]) -> list[str]:
    """Stage names in canonical order."""
    return sorted(set(names), key=ORDER.index)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold back what native libraries write to file descriptor 2 (TensorFlow's and CUDA's notices:
    oneDNN, "failed call to cuInit", CPU features, allocator patches) unless logging is at DEBUG
    (``-v``). Python's own output (log lines, progress bars) still reaches the real stderr; if the
    block raises, what was held back is printed after all."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (an embedding host): nothing to hold back
        yield
        return
    old = sys.stderr
    real = open(saved, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    moved = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and h.stream is old]
    with tempfile.TemporaryFile() as held:
        sys.stderr = real
        for h in moved:
            h.setStream(real)
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            real.flush()
            os.dup2(saved, 2)
            sys.stderr = old
            for h in moved:
                h.setStream(old)
            real.close()
            os.close(saved)
            if not ok:
                held.seek(0)
                old.write(held.read().decode("utf-8", "replace"))
                old.flush()
