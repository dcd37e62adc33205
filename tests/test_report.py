"""The HTML report, built by a real run over real photos, checked in headless Debian Chromium."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
FACES = ("fr_obama.jpg", "fr_biden.jpg", "fp_paul_rudd.jpg", "fp_kate_siegel.jpg", "mt_ivan.jpg")
NO_FACES = ("sk_brick.png", "sk_coffee.png", "sk_grass.png", "sk_coins.png", "dl_eagle.jpg")
JUNK = 55  # random bytes named .jpg: enough rows for two pages of 50


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def gallery_rows(work: Path) -> list[list]:
    text = (work / "reports/rejected.js").read_text(encoding="utf-8")
    return json.loads(text.split("=", 1)[1].strip().rstrip(";"))["rows"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """A finished run (compress, crop, dedup, split) with rejections with and without a thumbnail."""
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("report")
    src = root / "in"
    for label, names in (("happy", FACES), ("sad", NO_FACES)):
        (src / label).mkdir(parents=True)
        for n in names:
            shutil.copy(shared / "faces/presence" / n, src / label / n)
    (src / "happy/zero.jpg").write_bytes(b"")
    shutil.copy(shared / "faces/presence/fr_obama.jpg", src / "happy/fr_obama_again.jpg")  # dedup rejects one
    rng = random.Random(0)
    for i in range(JUNK):
        (src / "sad" / f"junk_{i:02d}.jpg").write_bytes(bytes(rng.randrange(256) for _ in range(2000)))
    shutil.copy(shared / "faces/presence/fr_obama.jpg", src / "loose.jpg")  # outside a class folder: refused at ingest
    out = root / "work"
    assert main(["run", "--input", str(src), "--out", str(out), "--stages", "compress,crop,dedup,split", "--workers", "2", "-q"]) == 0
    return out


def test_every_rejection_is_in_the_gallery_with_a_thumbnail_when_it_was_decoded(work: Path) -> None:
    rejected = {r["key"]: r for r in read_csv(work / "reports/rejected.csv")}
    rows = {r[0]: r for r in gallery_rows(work)}
    assert set(rows) == set(rejected)
    assert rejected["loose.jpg"]["stage"] == "ingest" and rejected["happy/zero.jpg"]["reason"] == "decode_error"
    no_face = [k for k, r in rejected.items() if r["stage"] == "crop"]
    assert {k.split("/")[1] for k in no_face} >= {"sk_brick.png", "sk_grass.png"}
    dup = [k for k, r in rejected.items() if r["stage"] == "dedup"]
    assert dup == ["happy/fr_obama_again.jpg"] and "copy of happy/fr_obama.jpg" in rows[dup[0]][5]
    for key, r in rows.items():
        thumb = work / "reports/thumbs" / r[4] if r[4] else None
        if rejected[key]["stage"] in ("crop", "dedup"):
            with Image.open(thumb) as im:  # crop: made in the per-item pass; dedup: by the report, after the decision
                assert im.format == "JPEG" and max(im.size) <= 160
        else:
            assert not r[4], key  # ingest refusals and undecodable files: a placeholder
        assert rejected[key]["reason"] in r[5] and key in r[5]  # the hover text


def test_page_has_counts_class_split_table_compress_savings_and_no_remote_url(work: Path) -> None:
    page = (work / "reports/index.html").read_text(encoding="utf-8")
    manifest = read_csv(work / "manifest.csv")
    assert "saved by compress" in page and "<svg" in page
    for split in {r["split"] for r in manifest}:
        assert f"<th>{split}</th>" in page
    assert "no_face" in page and "decode_error" in page and "unlabeled" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


def test_report_command_rebuilds_the_same_page_and_links_the_model(work: Path, cli, tmp_path: Path) -> None:
    before = (work / "reports/index.html").read_bytes()
    code, out, err = cli("report", work, "-j", "1")
    assert code == 0 and "index.html" in out, err
    assert (work / "reports/index.html").read_bytes() == before  # deterministic
    model = work / "model"
    model.mkdir(exist_ok=True)
    (model / "metrics.json").write_text(json.dumps({"test_accuracy": 0.6123, "macro_f1": 0.55}))
    Image.new("RGB", (64, 48), (200, 30, 30)).save(model / "curves.png")
    try:
        assert cli("report", work)[0] == 0
        page = (work / "reports/index.html").read_text(encoding="utf-8")
        assert 'src="model/curves.png"' in page and "test_accuracy" in page
        assert (work / "reports/model/curves.png").is_file()
    finally:
        shutil.rmtree(model)
        shutil.rmtree(work / "reports/model")
        cli("report", work)
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "not a facesift workspace" in err
    from pipeline.cli import build_parser

    assert "rejected-imagegallery" in "".join(build_parser().format_help().split())  # help text, wrapping aside


# -- in the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install playwright (it drives the system chromium; no download)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, work: Path):
    pg = browser.new_page(viewport={"width": 1280, "height": 4000})
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    pg.close()


def tiles(pg) -> list[str]:
    return pg.eval_on_selector_all("#gallery figcaption", "els => els.map(e => e.textContent)")


def test_page_loads_without_errors_and_thumbnails_render(page, work: Path) -> None:
    rows = gallery_rows(work)
    page.goto((work / "reports/index.html").as_uri())
    page.select_option("#f-size", "500")
    page.wait_for_function("Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete)")
    widths = page.eval_on_selector_all("#gallery img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) == sum(1 for r in rows if r[4]) >= 5
    assert all(w > 0 for w in widths)
    assert page.locator("#gallery .ph").count() == sum(1 for r in rows if not r[4])
    title = page.locator("#gallery figure", has_text="sk_brick.png").get_attribute("title")
    assert "no_face" in title and "crop" in title
    assert page.errors == []


def test_filter_narrows_the_gallery_and_paging_walks_it(page, work: Path) -> None:
    rejected = read_csv(work / "reports/rejected.csv")
    page.goto((work / "reports/index.html").as_uri())
    page.select_option("#f-size", "50")
    assert len(tiles(page)) == 50 and page.inner_text("#g-info") == f"showing 1–50 of {len(rejected)}"
    page.click("#g-next")
    assert len(tiles(page)) == len(rejected) - 50 and page.is_disabled("#g-next")
    page.click("#g-prev")
    assert len(tiles(page)) == 50
    page.select_option("#f-stage", "crop")
    crop = [r for r in rejected if r["stage"] == "crop"]
    assert len(tiles(page)) == len(crop) and all(t.startswith("crop") for t in tiles(page))
    page.select_option("#f-reason", "no_face")
    assert len(tiles(page)) == sum(r["reason"] == "no_face" for r in crop)
    page.select_option("#f-stage", "")
    page.fill("#f-key", "zero")
    assert tiles(page) == ["compress · decode_errorzero.jpg"]
    page.fill("#f-key", "")
    page.click('a[data-stage="ingest"]')  # the counts table links into the gallery
    page.wait_for_function("document.querySelectorAll('#gallery figure').length === 1")
    assert tiles(page) == ["ingest · unlabeledloose.jpg"]
    page.goto((work / "reports/index.html").as_uri() + "#stage=compress&reason=decode_error")  # a shareable view
    page.reload()
    assert page.input_value("#f-stage") == "compress" and page.input_value("#f-reason") == "decode_error"
    assert len(tiles(page)) == sum(r["reason"] == "decode_error" for r in rejected) == JUNK + 1
    assert page.errors == []
