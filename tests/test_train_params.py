"""train's parameters, split fallback and option help: fast checks that train nothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from stages.train import data as train_data


def test_a_workspace_without_split_is_split_by_the_split_stage_algorithm() -> None:
    from stages.split import SplitParams, assign

    recs = [{"key": f"{lab}/{i:03d}", "label": lab, "group": ""} for lab, n in (("a", 100), ("b", 30)) for i in range(n)]
    recs += [{"key": f"c/{i:03d}", "label": "c", "group": f"person{i // 5}"} for i in range(50)]
    first = train_data.split_stage_split(recs, seed=0)
    assert first == train_data.split_stage_split(list(reversed(recs)), seed=0)
    # Exactly what the split stage decides with its defaults, not a second algorithm.
    ordered = sorted(recs, key=lambda r: r["key"])
    assert [first[r["key"]] for r in ordered] == assign(ordered, SplitParams())
    count = Counter((r["label"], first[r["key"]]) for r in recs)
    assert (count["a", "train"], count["a", "val"], count["a", "test"]) == (80, 10, 10)
    assert abs(count["b", "train"] - 24) <= 1 and abs(count["b", "val"] - 3) <= 1
    persons: dict[str, set[str]] = {}
    for r in recs[130:]:
        persons.setdefault(r["group"], set()).add(first[r["key"]])
    assert all(len(s) == 1 for s in persons.values())
    assert first != train_data.split_stage_split(recs, seed=1)


def test_params_are_validated(cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main
    from stages.train import TrainParams

    with pytest.raises(ValueError, match=r"train\.epochs"):
        TrainParams(epochs=0)
    with pytest.raises(ValueError, match=r"train\.image_size"):
        TrainParams(model="mobilenetv3", image_size=24)
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path), "--model", "nope"])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err
    code, _, err = cli("train", tmp_path, "--epochs", "0")
    assert code == 2 and "train.epochs must be >= 1" in err
    code, _, err = cli("train", tmp_path)
    assert code == 2 and "manifest.csv not found" in err


def test_small_training_sets_get_smaller_batches_and_explicit_values_are_kept() -> None:
    from stages import models
    from stages.train import TrainParams

    def sized(n: int, **kw: float) -> tuple[int, float]:
        t = TrainParams(**kw).sized(n)  # type: ignore[arg-type]
        return t.batch_size, round(t.learning_rate, 6)

    assert sized(20983) == sized(3073) == (128, 0.002)  # FER2013: 164 steps an epoch, the recipe as measured
    assert sized(3072) == sized(1537) == (64, 0.001414)
    assert sized(800) == sized(769) == (32, 0.001)  # 25 steps of 32 (the last one short)
    assert sized(768) == sized(10) == (16, 0.000707)  # never below 16
    assert sized(800, batch_size=128) == (128, 0.002) and sized(800, learning_rate=0.005) == (32, 0.005)
    assert sized(100000, batch_size=512) == (512, 0.004)
    with pytest.raises(ValueError, match=r"train\.batch_size"):
        TrainParams(batch_size=-1)
    with pytest.raises(ValueError, match=r"TrainParams\.sized"):  # unsized, it would train at rate 0
        models.compile_for(models.build("fer-small", 3), TrainParams(), 10)


def test_every_train_and_predict_option_has_help() -> None:
    from pipeline.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("train", "predict"):
        for action in sub.choices[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_run_time_estimates_read_in_seconds_minutes_and_hours() -> None:
    from stages.train.callbacks import duration

    got = [duration(s) for s in (40, 89, 90, 720, 3599, 7500, 36000)]
    assert got == ["40 s", "89 s", "2 min", "12 min", "1 h 00 min", "2 h 05 min", "10 h 00 min"]
