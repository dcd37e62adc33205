"""ocr stage: real captioned / clean image pairs, real face photos, the real engines (no mocks)."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from stages.base import Context, Item
from stages.images import Decoded, View, encode_jpeg
from stages.ocr import Ocr, OcrParams
from stages.text import ENGINES, create, missing
from stages.text.base import register

# The clean template of this pair shows printed text on a book (百科事典) although labels.csv says
# any_text == 0; the detector rightly finds it in both images, so it is no "clean twin".
NOT_CLEAN = {"pigeon"}


def pairs(shared: Path) -> list[tuple[str, str, str]]:
    """(pair_key, captioned file, clean file) from text/labels.csv."""
    with open(shared / "text" / "labels.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    clean = {r["pair_key"]: r["file"] for r in rows if r["any_text"] == "0" and r["pair_key"]}
    return sorted((r["pair_key"], r["file"], clean[r["pair_key"]]) for r in rows
                  if r["overlay_text"] == "1" and r["text_kind"] == "caption" and r["pair_key"] in clean
                  and r["pair_key"] not in NOT_CLEAN)


@pytest.fixture(scope="module")
def ppocr_stage() -> Ocr:
    stage = Ocr(OcrParams())
    stage.ensure_setup()
    return stage


def look(stage: Ocr, path: Path, view=None):
    image = Decoded.from_bytes(path.read_bytes())
    return stage.process(Item(path.name, str(path), str(path)), image, Context(Path("."), view=view))


def test_captioned_rejected_and_clean_twin_kept(shared: Path, ppocr_stage: Ocr) -> None:
    found = pairs(shared)
    assert len(found) >= 4, found
    for key, captioned, clean in found:
        out = look(ppocr_stage, shared / "text" / captioned)
        assert (out.status, out.reason) == ("rejected", "text"), (key, out)
        assert out.metrics["text_regions"] >= 1 and out.metrics["text_area"] >= 0.01
        assert re.search(r"\d+ regions?, \d+\.\d% of the image", out.detail), out.detail
        twin = look(ppocr_stage, shared / "text" / clean)
        assert twin.status == "kept", (key, clean, twin)
        assert twin.metrics["text_area"] < 0.01


def test_face_photos_without_text_kept(shared: Path, ppocr_stage: Ocr) -> None:
    for name in ("fr_obama.jpg", "dl_tom_cruise.jpg", "fp_paul_rudd.jpg", "fr_32bit.png"):
        out = look(ppocr_stage, shared / "faces" / "presence" / name)
        assert out.status == "kept", (name, out)
        assert out.metrics["text_where"] == "image"


def test_boxes_are_in_source_pixels(shared: Path, ppocr_stage: Ocr) -> None:
    # sparta: 1138x600, one caption line across the bottom of the image.
    out = look(ppocr_stage, shared / "text" / "images" / "mg_render_43_sparta.png")
    assert out.status == "rejected"
    _, y, w, h = out.metrics["text_boxes"][0]
    assert y > 600 * 0.75 and y + h <= 600 and w > 1138 * 0.4, out.metrics["text_boxes"]
    again = look(ppocr_stage, shared / "text" / "images" / "mg_render_43_sparta.png")
    assert again.metrics == out.metrics  # deterministic


def test_face_crop_is_looked_at_when_crop_handed_one_on(shared: Path) -> None:
    stage = Ocr(OcrParams(where="face"))
    stage.ensure_setup()
    path = shared / "text" / "images" / "mg_render_43_sparta.png"
    full = Decoded.from_bytes(path.read_bytes()).full()
    face = full[: int(full.shape[0] * 0.7), 300:900]  # the head, above the caption
    out = look(stage, path, view=View(face))
    assert out.status == "kept" and out.metrics["text_where"] == "face", out
    # No crop before ocr: it falls back to the whole image, and says so.
    whole = look(stage, path)
    assert whole.status == "rejected" and whole.metrics["text_where"] == "image"


def test_detector_with_reader_reports_the_words(shared: Path) -> None:
    stage = Ocr(OcrParams(engine="ppocr+tesseract"))
    stage.ensure_setup()
    out = look(stage, shared / "text" / "images" / "mg_render_17_home.png")  # captions One / Two / Three
    assert out.status == "rejected"
    assert {"One", "Two", "Three"} <= set(out.metrics["text_read"].split()), out.metrics
    assert out.detail.startswith('"') and "One" in out.detail and "regions" in out.detail
    clean = look(stage, shared / "faces" / "presence" / "fr_obama.jpg")
    assert clean.status == "kept" and clean.metrics["text_words"] == 0


def test_tesseract_engine(shared: Path) -> None:
    stage = Ocr(OcrParams(engine="tesseract"))
    stage.ensure_setup()
    out = look(stage, shared / "text" / "images" / "sk_bw_text.png")  # rendered prose
    assert out.status == "rejected" and "detestable" in out.metrics["text_read"], out
    kept = look(stage, shared / "text" / "images" / "mg_tpl_sparta.jpg")  # sparta, no caption
    assert kept.status == "kept", kept


def test_subtitle_drawn_on_a_face_photo(shared: Path, ppocr_stage: Ocr) -> None:
    from PIL import Image, ImageDraw, ImageFont

    path = shared / "faces" / "presence" / "fr_obama.jpg"
    im = Image.open(path).convert("RGB")
    w, h = im.size
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=round(h * 0.03))  # one subtitle line, 3% of the height
    text = "we will be right back after this"
    draw.text(((w - draw.textlength(text, font=font)) / 2, h * 0.88), text, font=font, fill="white",
              stroke_width=3, stroke_fill="black")
    subtitled = Decoded.from_bytes(encode_jpeg(np.asarray(im), 90))
    out = ppocr_stage.process(Item("s", "s", "s"), subtitled, Context(Path(".")))
    assert out.status == "rejected" and out.metrics["text_regions"] == 1, out
    x, y, bw, bh = out.metrics["text_boxes"][0]
    # Around the drawn line, in source pixels: centred, near 90% of the height, most of the width.
    assert abs(x + bw / 2 - w / 2) < w * 0.05 and abs(y + bh / 2 - h * 0.9) < h * 0.03 and bw > w * 0.5
    reader = Ocr(OcrParams(engine="ppocr+tesseract"))
    reader.ensure_setup()
    read = reader.process(Item("s", "s", "s"), subtitled, Context(Path(".")))
    assert read.status == "rejected" and "right back" in read.detail, read.detail


def test_missing_tesseract_binary_names_the_apt_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stages.text.tesseract import installed_languages

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without tesseract: the real lookup fails
    installed_languages.cache_clear()
    try:
        assert "apt-get install tesseract-ocr tesseract-ocr-kor" in missing("tesseract", "eng+kor")
    finally:
        installed_languages.cache_clear()


def test_missing_language_names_the_package() -> None:
    why = missing("tesseract", "eng+zzz")
    assert "zzz" in why and "apt-get install tesseract-ocr-zzz" in why
    assert missing("tesseract", "eng+kor") == ""
    assert missing("ppocr") == ""


def test_bad_parameters_name_the_field() -> None:
    for kwargs, field in (({"where": "body"}, "ocr.where"), ({"min_area": 1.5}, "ocr.min_area"),
                          ({"min_score": -0.1}, "ocr.min_score"), ({"engine": "nope"}, "ocr.engine"),
                          ({"languages": "eng++kor"}, "ocr.languages"), ({"min_px": -1}, "ocr.min_px")):
        with pytest.raises(ValueError, match=re.escape(field)):
            OcrParams(**kwargs)
    with pytest.raises(ValueError, match="tesseract-ocr-zzz"):
        OcrParams(engine="tesseract", languages="eng+zzz")


def test_registry_refuses_duplicates_and_unknown_names() -> None:
    from pipeline.config import ConfigError

    with pytest.raises(ValueError, match="registered twice"):
        register("ppocr")(type("Again", (), {}))
    with pytest.raises(ConfigError, match="unknown text engine"):
        create("nope")
    assert {"ppocr", "tesseract", "ppocr+tesseract"} <= set(ENGINES)


def test_cli_flags_and_bad_value_before_work(tmp_path: Path, cli, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    code, _, err = cli("run", "--input", tmp_path / "in", "--out", tmp_path / "work", "--stages", "ocr", "--ocr-min-area", "2")
    assert code == 2 and "ocr.min_area" in err
    assert not (tmp_path / "work").exists()
    code, _, err = cli("run", "--input", tmp_path / "in", "--out", tmp_path / "work", "--stages", "ocr",
                       "--ocr-engine", "tesseract", "--ocr-languages", "eng+zzz")
    assert code == 2 and "apt-get install tesseract-ocr-zzz" in err
    with pytest.raises(SystemExit):
        cli("run", "--help")
    helptext = capsys.readouterr().out
    for flag in ("--ocr-engine", "--ocr-where", "--ocr-min-area", "--ocr-min-score", "--ocr-min-px", "--ocr-languages"):
        assert flag in helptext


@pytest.mark.parametrize("engine", ["ppocr", "ppocr+tesseract"])
def test_run_end_to_end_writes_text_rows(shared: Path, tmp_path: Path, cli, engine: str) -> None:
    src = tmp_path / "in" / "happy"
    src.mkdir(parents=True)
    images = shared / "text" / "images"
    for name in ("mg_render_17_home.png", "mg_render_45_toohigh.png", "mg_tpl_fine.png", "mg_tpl_toohigh.jpg"):
        shutil.copy(images / name, src / name)
    shutil.copy(shared / "faces" / "presence" / "fr_obama.jpg", src / "fr_obama.jpg")
    work = tmp_path / "work"
    code, out, err = cli("run", "--input", tmp_path / "in", "--out", work, "--stages", "compress,ocr", "--workers", "1",
                         "--ocr-engine", engine)
    assert code == 0, (out, err)
    with open(work / "reports" / "rejected.csv", encoding="utf-8") as f:
        rejected = {Path(r["key"]).name: r for r in csv.DictReader(f)}
    assert set(rejected) == {"mg_render_17_home.png", "mg_render_45_toohigh.png"}, rejected
    for r in rejected.values():
        assert (r["stage"], r["reason"]) == ("ocr", "text")
        assert re.search(r"\d+ regions?, \d+\.\d% of the image", r["detail"]), r
    if engine == "ppocr+tesseract":  # the words are in the report
        assert "One Two Three" in rejected["mg_render_17_home.png"]["detail"]
        assert "TOO DAMN HIGH" in rejected["mg_render_45_toohigh.png"]["detail"]
    with open(work / "manifest.csv", encoding="utf-8") as f:
        kept = list(csv.DictReader(f))
    assert {Path(r["key"]).name for r in kept} == {"mg_tpl_fine.png", "mg_tpl_toohigh.jpg", "fr_obama.jpg"}
    assert all(float(r["text_area"]) < 0.01 for r in kept)


def test_text_network_same_on_both_runtimes(shared: Path) -> None:
    """PP-OCRv4 in float32 on OpenVINO (its default runtime) and on ONNX Runtime: the same
    probability map on a captioned meme and a face photo, so the same regions."""
    from stages import netrun
    from stages.text.ppocr import MODEL, PACKAGE, package_file

    path = package_file(PACKAGE, *MODEL)
    ov, ort = netrun.load(path, prefer="openvino"), netrun.load(path, prefer="onnxruntime")
    engine = create("ppocr")
    for name in ("text/images/mg_render_43_sparta.png", "faces/presence/fr_obama.jpg"):
        rgb = Decoded.from_bytes((shared / name).read_bytes()).at_most(engine.side)
        engine.network = ov
        a, regions = engine.probabilities(rgb), engine.find_text(rgb)
        engine.network = ort
        b = engine.probabilities(rgb)
        assert a.shape == b.shape and float(np.abs(a - b).max()) < 1e-3, name  # measured: 1.2e-5 at most
        assert regions == engine.find_text(rgb), name
        assert bool(regions) == name.startswith("text/"), name  # the caption found, the face photo clean


def test_runtime_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import netrun

    monkeypatch.delenv("FACESIFT_RUNTIME", raising=False)
    assert netrun.runtime("openvino") == "openvino"  # installed with facesift
    assert netrun.runtime("onnxruntime") == "onnxruntime"
    monkeypatch.setenv("FACESIFT_RUNTIME", "onnxruntime")  # the user's choice wins over a network's preference
    assert netrun.runtime("openvino") == "onnxruntime"
    # the text network as loaded: OpenVINO, float32, one thread on no pinned core (pinned, every worker's went to one core)
    from stages.text.ppocr import MODEL, PACKAGE, _network, package_file

    monkeypatch.delenv("FACESIFT_RUNTIME")
    _network.cache_clear()
    net = _network(package_file(PACKAGE, *MODEL))
    assert isinstance(net, netrun.OpenVINONetwork)
    import openvino as ov

    assert net.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32  # bfloat16 on this CPU otherwise
    assert int(net.compiled.get_property("INFERENCE_NUM_THREADS")) == 1 and net.compiled.get_property("ENABLE_CPU_PINNING") is False
    monkeypatch.setenv("FACESIFT_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="FACESIFT_RUNTIME must be one of openvino, onnxruntime, got 'tensorrt'"):
        netrun.runtime()
