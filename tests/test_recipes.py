"""The DESIGN.md recipes hold: a detector backend is one file, one import line and its test (here a
throwaway backend registered the same way), and the reason vocabulary is listed whole there."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from manifests.schema import REASONS
from manifests.store import Store
from stages.base import Context, Item, Outcome
from stages.crop import Crop, CropParams
from stages.detectors import DETECTORS
from stages.detectors.base import Backend, Face, register
from stages.images import Decoded

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def centre_backend() -> Iterator[str]:
    """A backend that 'finds' one face in the middle half of the image, registered as a new
    stages/detectors/<name>.py would register itself; removed again afterwards."""

    @register("test-centre")
    class Centre(Backend):
        side: ClassVar[int] = 320

        def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
            h, w = rgb.shape[:2]
            return [Face((w / 4, h / 4, w / 2, h / 2), 0.9)]

    try:
        yield "test-centre"
    finally:
        del DETECTORS["test-centre"]


def test_a_registered_backend_is_a_crop_detector(centre_backend: str, shared: Path, tmp_path: Path) -> None:
    path = shared / "faces" / "presence" / "fr_obama.jpg"
    image = Decoded.from_bytes(path.read_bytes())
    stage = Crop(CropParams(detector=centre_backend, min_face=8))
    stage.ensure_setup()
    out = stage.process(Item("obama.jpg", str(path), str(path)), image, Context(tmp_path))
    assert isinstance(out, Outcome) and out.status == "kept"
    w, h = image.size
    # The box found on the 320 px copy is mapped back to source pixels.
    assert out.metrics["box_w"] == pytest.approx(w / 2, abs=2) and out.metrics["box_h"] == pytest.approx(h / 2, abs=2)
    assert Decoded((tmp_path / out.artifact).read_bytes).size == (out.metrics["width"], out.metrics["height"])
    with pytest.raises(ValueError, match="registered twice"):
        register(centre_backend)(type("Again", (Backend,), {}))


def test_design_lists_the_whole_reason_vocabulary() -> None:
    text = (ROOT / "DESIGN.md").read_text(encoding="utf-8")
    section = text.split("## Reason vocabulary", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", section)) == set(REASONS)


def test_a_reason_outside_the_vocabulary_never_reaches_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown reason"):
        Outcome("a", "rejected", "looks_odd")
    with pytest.raises(ValueError, match="unknown reason"):
        Outcome.failed("a", "")
    store = Store(tmp_path)
    row = {"key": "a", "status": "failed", "reason": "crashed", "detail": "", "artifact": "", "metrics": "{}"}
    with pytest.raises(ValueError, match="unknown reason"):
        store.write_part("crop", 0, [row])
    with pytest.raises(ValueError, match="unknown reason"):
        store.write_dataset("dedup", [row | {"status": "rejected", "reason": ""}])
    store.write_part("crop", 0, [row | {"reason": "worker_crash"}])
    assert store.read_part("crop", 0)[0]["reason"] == "worker_crash"
