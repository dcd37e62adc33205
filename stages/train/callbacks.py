"""Keras callbacks of the fit loop: resume after a kill, and one log line per epoch.

Imported only from ``stages.train.fit`` when training starts (it imports Keras at module level).

Resume: after every finished epoch the model with its optimizer state goes to
``backup/last.keras`` (written to a temporary name, then renamed), then ``backup/state.json`` (also
atomic) records the epoch, the history so far and the state of EarlyStopping, ReduceLROnPlateau
and ModelCheckpoint. ``state.json`` is written last, so after a kill -9 at any point it names a
complete epoch whose files exist; the next run loads them and continues with ``initial_epoch``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import keras
from tqdm import tqdm

from stages import progress
from stages.images import atomic_write

log = logging.getLogger("stages.train.fit")

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


def load_state(backup: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((backup / "state.json").read_text())
    except (OSError, ValueError):
        return None
    if not (backup / "last.keras").is_file():
        return None
    loaded: dict[str, Any] = state
    return loaded


def history_csv(rows: list[dict[str, Any]]) -> bytes:
    lines = [",".join(HISTORY_COLUMNS)]
    lines += [",".join(str(r.get(c, "")) for c in HISTORY_COLUMNS) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def learning_rate(model: Any) -> float:
    # float() of a tensor: keras.ops.convert_to_numpy on a variable warns under NumPy 2.
    return float(keras.ops.convert_to_tensor(model.optimizer.learning_rate))


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


class Resume(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
    """Saves a complete resume point after every epoch; restores callback state on resume.

    Must come after EarlyStopping, ReduceLROnPlateau and ModelCheckpoint in the callback list:
    their ``on_train_begin`` resets state this one then restores, and their ``on_epoch_end`` has
    run when this one records the epoch.
    """

    def __init__(self, backup: Path, out: Path, fingerprint: str, state: dict[str, Any] | None,
                 early: keras.callbacks.EarlyStopping | None, plateau: keras.callbacks.ReduceLROnPlateau | None,
                 best: keras.callbacks.ModelCheckpoint) -> None:
        super().__init__()
        self.backup, self.out = backup, out
        self.early, self.plateau, self.best = early, plateau, best
        self.state: dict[str, Any] = state or {"fingerprint": fingerprint, "epoch": 0, "history": [], "best_file": "",
                                               "stopped": False, "early": {}, "plateau": {}, "best": None}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        s = self.state
        if not s["epoch"]:
            return
        self.best.best = s["best"] if s["best"] is not None else self.best.best
        if self.early is not None and s["early"]:
            self.early.wait = s["early"]["wait"]
            self.early.best = s["early"]["best"]
            self.early.best_epoch = s["early"]["best_epoch"]
            if s["best_file"] and (self.backup / s["best_file"]).is_file():
                self.early.best_weights = keras.models.load_model(self.backup / s["best_file"], compile=False).get_weights()
        if self.plateau is not None and s["plateau"]:
            self.plateau.wait = s["plateau"]["wait"]
            self.plateau.best = s["plateau"]["best"]
            self.plateau.cooldown_counter = s["plateau"]["cooldown"]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        s = self.state
        row = {"epoch": epoch + 1, **{k: round(float(logs[k]), 6) for k in HISTORY_COLUMNS[1:5] if k in logs}}
        row["learning_rate"] = float(f"{learning_rate(self.model):.6g}")
        s["history"].append(row)
        if _num(self.best.best) != s["best"]:
            # ModelCheckpoint just wrote best-<epoch>.keras; older ones are no longer needed.
            s["best"] = _num(self.best.best)
            s["best_file"] = f"best-{epoch + 1:03d}.keras"
            for old in self.backup.glob("best-*.keras"):
                if old.name != s["best_file"]:
                    old.unlink(missing_ok=True)
        if self.early is not None:
            s["early"] = {"wait": self.early.wait, "best": _num(self.early.best), "best_epoch": self.early.best_epoch}
        if self.plateau is not None:
            s["plateau"] = {"wait": self.plateau.wait, "best": _num(self.plateau.best), "cooldown": self.plateau.cooldown_counter}
        s["epoch"] = epoch + 1
        s["stopped"] = bool(self.model.stop_training)  # early stopping: over whatever the epoch budget
        tmp = self.backup / "last-tmp.keras"
        self.model.save(tmp)
        os.replace(tmp, self.backup / "last.keras")
        atomic_write(self.backup / "state.json", json.dumps(s, indent=1).encode())
        atomic_write(self.out / "history.csv", history_csv(s["history"]))


def duration(seconds: float) -> str:
    """'40 s', '12 min', '2 h 05 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class EpochLog(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
    """Two bars, one over the epochs (with the ETA of the whole run) and one over the current epoch's
    batches, then one INFO line per epoch (Keras' own progress output is off: it would flood the
    pipeline's log). Early on, one INFO line says how long the whole run will take at the pace of its
    first batches: on a CPU without fast matrix units the default recipe takes hours, and the epoch
    bar's ETA only appears after a whole epoch."""

    #: batches left out of the pace (graph tracing, first allocations), then batches it is measured over
    WARM, MEASURE = 3, 20
    #: runs longer than this get a hint on how to shorten them
    LONG_S = 2 * 3600

    def __init__(self, total: int, start: int = 0) -> None:
        super().__init__()
        self.total, self.start = total, start
        self.t0 = 0.0
        self.epochs: tqdm | None = None
        self.bar: tqdm | None = None
        self.done, self.t_warm, self.estimated = 0, 0.0, False

    def _estimate(self) -> None:
        """Log the time the rest of the run takes at the pace since batch ``WARM`` (once)."""
        self.estimated = True
        pace = (self.done - self.WARM) / max(time.monotonic() - self.t_warm, 1e-9)  # batches per second
        steps = self.params.get("steps") or 0
        left = (self.total - self.start) * steps - self.done
        if not steps or left <= 0:
            return
        hint = (" (fewer epochs, a smaller model or a GPU shortens it)"
                if left / pace > self.LONG_S else "")
        log.info("train: about %s left of this run's %d epoch(s), at %.2f batches/s%s",
                 duration(left / pace), self.total - self.start, pace, hint)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.epochs = progress.bar(self.total, "training", "epoch", initial=self.start, position=0)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.t0 = time.monotonic()
        self.bar = progress.bar(self.params.get("steps"), f"epoch {epoch + 1}/{self.total}", "batch", leave=False, position=1)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(1)
        self.done += 1
        if self.done == self.WARM:
            self.t_warm = time.monotonic()
        elif not self.estimated and self.done == self.WARM + self.MEASURE:
            self._estimate()

    def _close_batches(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._close_batches()
        if self.epochs is not None:
            self.epochs.close()
            self.epochs = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._close_batches()
        if self.epochs is not None:
            self.epochs.update(1)
        if not self.estimated and self.done > self.WARM:  # short epochs: the pace so far, validation included
            self._estimate()
        g = (logs or {}).get
        log.info("train: epoch %d/%d  loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.2g  (%.1fs)",
                 epoch + 1, self.total, g("loss", float("nan")), g("accuracy", float("nan")), g("val_loss", float("nan")),
                 g("val_accuracy", float("nan")), learning_rate(self.model),
                 time.monotonic() - self.t0)
