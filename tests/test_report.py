"""The HTML report, built by a real run over real photos, checked in headless Debian Chromium."""

from __future__ import annotations

import csv
import json
import os
import random
import re
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
MEME = "mg_render_43_sparta.png"  # a face with a caption: crop keeps it, ocr rejects it
GROUP = "2008_001009.jpg"  # two faces: crop rejects it with --crop-policy reject, naming the largest
KOREAN = "sad/슬픈_얼굴_사진_아주_긴_파일_이름도_끝까지_보여야_합니다_2024.png"  # no face: a crop rejection with a Hangul name


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
    shutil.copy(shared / "text/images" / MEME, src / "happy" / MEME)
    shutil.copy(shared / "faces/groups" / GROUP, src / "happy" / GROUP)
    shutil.copy(shared / "faces/presence/sk_coins.png", src / KOREAN)
    out = root / "work"
    assert main(["run", *RUN, "--input", str(src), "--out", str(out), "-q"]) == 0
    return out


RUN = ["--stages", "compress,crop,ocr,dedup,split", "--crop-policy", "reject", "--workers", "2"]


def test_every_rejection_is_in_the_gallery_with_a_thumbnail_when_it_was_decoded(work: Path) -> None:
    rejected = {r["key"]: r for r in read_csv(work / "reports/rejected.csv")}
    text = (work / "reports/rejected.js").read_text(encoding="utf-8")
    reasons = json.loads(text.split("=", 1)[1].strip().rstrip(";"))["reasons"]
    order = [reasons[r[2]] for r in gallery_rows(work)]
    rows = {r[0]: r for r in gallery_rows(work)}
    assert set(rows) == set(rejected)
    # no_face rows open the gallery (a detector that does not fit the photos shows on the first page)
    n = order.count("no_face")
    assert n >= 2 and order[:n] == ["no_face"] * n
    assert rejected["loose.jpg"]["stage"] == "ingest" and rejected["happy/zero.jpg"]["reason"] == "decode_error"
    no_face = [k for k, r in rejected.items() if r["stage"] == "crop"]
    assert {k.split("/")[1] for k in no_face} >= {"sk_brick.png", "sk_grass.png"}
    dup = [k for k, r in rejected.items() if r["stage"] == "dedup"]
    assert dup == ["happy/fr_obama_again.jpg"] and "copy of happy/fr_obama.jpg" in rows[dup[0]][5]
    assert rejected["happy/" + MEME]["stage"] == "ocr" and rejected["happy/" + GROUP]["reason"] == "multiple_faces"
    for key, r in rows.items():
        thumb = work / "reports/thumbs" / r[4] if r[4] else None
        if rejected[key]["stage"] in ("crop", "ocr", "dedup") or key == "loose.jpg":
            # crop, ocr: made in the per-item pass; dedup: by the report, after the decision; an unlabeled image decodes
            with Image.open(thumb) as im:
                assert im.format == "JPEG" and max(im.size) <= 160
        else:
            assert not r[4], key  # undecodable files: a placeholder
        assert rejected[key]["reason"] in r[5] and key in r[5]  # the hover text


def test_page_has_counts_class_split_table_compress_savings_and_no_remote_url(work: Path) -> None:
    page = (work / "reports/index.html").read_text(encoding="utf-8")
    manifest = read_csv(work / "manifest.csv")
    assert "saved by compress" in page and "<svg" in page
    for split in {r["split"] for r in manifest}:
        assert f"<th>{split}</th>" in page
    assert "no_face" in page and "decode_error" in page and "unlabeled" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # the SVG namespace is a name, not a fetch


def test_report_command_rebuilds_the_same_page_and_links_the_model(work: Path, cli, tmp_path: Path) -> None:
    before = (work / "reports/index.html").read_bytes()
    code, out, err = cli("report", work, "-j", "1")
    assert code == 0 and "index.html" in out, err
    assert (out + err).count("index.html") == 1  # said once
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


def test_the_run_summary_and_the_page_give_the_same_bytes_saved_and_say_which_images(work: Path, cli) -> None:
    src = work.parent / "in"
    code, out, err = cli("run", *RUN, "--input", src, "--out", work)  # everything done: the summary again
    assert code == 0, err
    m = re.search(r"compress +([\d.]+) MB -> ([\d.]+) MB \([\d.]+x smaller\) over the (\d+) image\(s\) compress kept", out)
    assert m, out
    page = (work / "reports/index.html").read_text(encoding="utf-8")
    assert f"saved by compress over the {m[3]} image(s) it kept: {m[1]} MB &rarr; {m[2]} MB" in page
    kept = read_csv(work / "manifest.csv")
    k_in, k_out = (sum(int(r[c]) for r in kept) / 1e6 for c in ("bytes_in", "bytes_out"))
    assert f"over the {len(kept)} kept in manifest.csv: {k_in:.1f} MB &rarr; {k_out:.1f} MB" in page
    assert int(m[3]) > len(kept)  # the two figures count different images, and each says which


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
    """Each tile's stage, reason and name (the caption's first lines)."""
    return pg.eval_on_selector_all("#gallery figcaption", "els => els.map(e => e.childNodes[0].textContent + e.childNodes[2].textContent)")


def test_page_loads_without_errors_and_thumbnails_render(page, work: Path) -> None:
    rows = gallery_rows(work)
    page.goto((work / "reports/index.html").as_uri())
    page.select_option("#f-size", "500")
    page.wait_for_function("Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete)")
    widths = page.eval_on_selector_all("#gallery img", "els => els.map(e => e.naturalWidth)")
    partners = [r[6]["dup"] for r in rows if r[6] and "dup" in r[6]]
    assert partners == [["happy/fr_obama.jpg", "happy/fr_obama.jpg"]]
    assert len(widths) == sum(1 for r in rows if r[4]) + len(partners) >= 5
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


def tile_of(pg, name: str):
    return pg.locator("#gallery figure", has_text=name)


def drawn_boxes(pg, fig) -> list[tuple[int, int, int, int]]:
    """Bounding box (x0, y0, x1, y1 in tile-image pixels) of what the overlay changes, per drawn box."""
    import numpy as np

    pic = fig.locator(".pic").first
    pic.scroll_into_view_if_needed()

    def grab() -> np.ndarray:
        import io

        return np.asarray(Image.open(io.BytesIO(pic.screenshot())).convert("RGB")).astype(int)

    def shot() -> np.ndarray:
        # The page settled: two screenshots in a row agree (a loaded machine can take one mid-paint).
        last = grab()
        for _ in range(20):
            now = grab()
            if np.array_equal(now, last):
                return now
            last = now
        return last

    pic.locator("img").first.evaluate("img => img.decode()")  # the thumbnail decoded before the first shot

    rects = pic.locator("svg rect")
    with_boxes = shot()
    out = []
    for i in range(rects.count()):  # one box at a time: hide the others, then this one too, and compare
        pic.evaluate("(el, i) => el.querySelectorAll('svg rect').forEach((r, j) => r.style.display = j === i ? '' : 'none')", i)
        one = shot()
        pic.evaluate("el => el.querySelectorAll('svg rect').forEach(r => r.style.display = 'none')")
        diff = np.abs(one - shot()).sum(axis=2) > 60
        ys, xs = np.nonzero(diff)
        out.append((int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else (0, 0, 0, 0))
    pic.evaluate("el => el.querySelectorAll('svg rect').forEach(r => r.style.display = '')")
    # Every box back: no pixel differs from the first shot as much as a box's does (a loaded machine
    # can repaint a few levels off, which exact equality failed on).
    assert not (np.abs(shot() - with_boxes).sum(axis=2) > 60).any()
    return out


def expected_box(ev: dict, box: list) -> tuple[float, float, float, float]:
    """Where a box in source pixels lands on the 160x160 tile image (scaled to fit, centred)."""
    (w, h), s = ev["size"], 160 / max(ev["size"])
    ox, oy = (160 - w * s) / 2, (160 - h * s) / 2
    return ox + box[0] * s, oy + box[1] * s, ox + (box[0] + box[2]) * s, oy + (box[1] + box[3]) * s


def test_text_and_face_boxes_are_drawn_on_the_thumbnails(page, work: Path) -> None:
    rows = {r[0]: r for r in gallery_rows(work)}
    page.goto((work / "reports/index.html").as_uri())
    page.select_option("#f-size", "500")
    page.wait_for_function("Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete)")
    for key, kind in (("happy/" + MEME, "text"), ("happy/" + GROUP, "face")):
        ev = rows[key][6]
        assert ev["boxes"] and all(b[4] == kind for b in ev["boxes"]), ev
        fig = tile_of(page, key.split("/")[-1])
        got = drawn_boxes(page, fig)
        assert len(got) == len(ev["boxes"])
        for (x0, y0, x1, y1), box in zip(got, ev["boxes"], strict=True):
            ex = expected_box(ev, box)
            assert max(abs(a - b) for a, b in zip((x0, y0, x1, y1), ex, strict=True)) <= 3, (key, (x0, y0, x1, y1), ex)
    text = rows["happy/" + MEME][6]["boxes"][0]
    assert text[2] > 300 and text[1] > 400  # the caption across the bottom of the meme, in source pixels
    assert page.errors == []


def test_duplicate_beside_its_kept_image_and_unlabeled_images_shown(page, work: Path) -> None:
    page.goto((work / "reports/index.html").as_uri())
    page.select_option("#f-size", "500")
    page.wait_for_function("Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete)")
    dup = tile_of(page, "fr_obama_again.jpg")
    imgs = dup.locator("img")
    assert imgs.count() == 2 and imgs.nth(1).get_attribute("alt") == "happy/fr_obama.jpg"
    assert all(w > 0 for w in imgs.evaluate_all("els => els.map(e => e.naturalWidth)"))
    assert "kept: fr_obama.jpg" in dup.inner_text()
    loose = tile_of(page, "loose.jpg")
    assert loose.locator("img").evaluate("e => e.naturalWidth") > 0 and loose.locator(".ph").count() == 0
    assert page.errors == []


def test_korean_names_show_whole_and_as_hangul_not_tofu(page, work: Path) -> None:
    import numpy as np

    page.goto((work / "reports/index.html").as_uri())
    page.select_option("#f-size", "500")
    name = KOREAN.split("/")[-1]
    cap = tile_of(page, name).locator("figcaption")
    assert name in cap.inner_text().replace("\n", "")  # the whole name, wrapped, not cut
    assert "Noto Sans CJK KR" in cap.evaluate("e => getComputedStyle(e).fontFamily")

    def render(text: str) -> np.ndarray:
        import io

        cap.evaluate("(e, t) => { const s = document.createElement('span'); s.id = 'probe'; s.textContent = t;"
                     " s.style.fontSize = '32px'; e.appendChild(s); }", text)
        probe = page.locator("#probe")
        img = np.asarray(Image.open(io.BytesIO(probe.screenshot())).convert("L"))
        probe.evaluate("e => e.remove()")
        return img

    hangul, swapped, missing = render("슬픈얼굴"), render("얼굴슬픈"), render("\ue000\ue001\ue002\ue003")
    # Tofu draws one box for every character: the same picture whatever the order, and the picture of a
    # codepoint no font has. Real glyphs differ.
    assert hangul.shape != swapped.shape or not np.array_equal(hangul, swapped)
    assert hangul.shape != missing.shape or not np.array_equal(hangul, missing)
    assert (hangul < 128).sum() > 50  # ink on the page
    assert page.errors == []


def test_a_duplicates_partner_comes_from_dup_of_or_from_the_detail() -> None:
    from pipeline.report import _evidence, _partner

    row = {"key": "a/copy.jpg", "stage": "dedup", "reason": "duplicate", "metrics": {}, "detail": "near duplicate of a/기쁨 1.jpg (distance 4)"}
    assert _partner(row, {}) == "a/기쁨 1.jpg"
    assert _partner(row | {"detail": "exact copy of a/x.jpg"}, {}) == "a/x.jpg"
    extra = {"dup_of": "a/kept.jpg", "dup_kind": "near", "dup_hamming": 6, "dup_inliers": 41, "dup_overlap": 0.8123}
    assert _partner(row, extra) == "a/kept.jpg"  # the dataset step's own metric wins over the wording
    ev = _evidence(row, extra, "", "a/kept.jpg", "a/kept.jpg")
    assert ev["dup"] == ["a/kept.jpg", "a/kept.jpg"] and ev["dupm"] == ["kind near", "hamming 6", "inliers 41", "overlap 0.812"]
    assert _partner(row | {"reason": "label_conflict"}, extra) == ""
