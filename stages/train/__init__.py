"""train: the facial-expression CNN trained on what every earlier stage kept (artifacts in WORK/model/).

A dataset step. It trains on the records' ``file`` with their ``label`` and the ``split`` the split
stage decided (a deterministic stratified 80/10/10 split by key hash when there is none), and keeps
every record: training rejects nothing. Also run alone by ``python -m pipeline train WORK``.

    params.py     TrainParams (the [train] table, --train-* flags)
    fit.py        the fit loop: plan, resume, precision, evaluation, WORK/model/ artifacts; predict_arrays
    data.py       records -> samples -> the decoded uint8 cache -> Keras batches (augmentation)
    callbacks.py  resume after a kill, one log line per epoch (imports Keras: loaded by fit.py when training)
    evaluate.py   confusion matrix, precision/recall/F1, the plots
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.base import Outcome, Stage, register
from stages.train.fit import TrainResult, train
from stages.train.params import TrainParams

__all__ = ["Train", "TrainParams", "TrainResult", "train"]


@register
class Train(Stage[TrainParams]):
    name = "train"
    Params = TrainParams
    version = 2
    #: The split actually trained with: the split stage's, or the fallback one made here.
    columns = ("split",)

    def run(self, records: list[dict[str, Any]], work: Path) -> Iterator[Outcome]:
        result = train(records, work, self.params)
        for r in records:
            # Records left out by max_items keep whatever split the split stage gave them.
            yield Outcome(r["key"], metrics={"split": result.splits.get(r["key"]) or (r.get("metrics") or {}).get("split", "")})

    def missing_outputs(self, work: Path) -> str:
        gone = [f"model/{f}" for f in ("model.keras", "metrics.json", "labels.json") if not (work / "model" / f).is_file()]
        return ", ".join(gone)
