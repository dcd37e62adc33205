"""predict's CSV: a photo without a face says so in a column, not with an empty row."""

from __future__ import annotations

import csv
import io

from pipeline.predict import Writer

LABELS = ["happy", "sad"]


def rows(*adds: tuple) -> list[dict[str, str]]:
    buf = io.StringIO()
    w = Writer("csv", LABELS, buf)
    for a in adds:
        w.add(*a)
    w.close()
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


def test_csv_says_no_face_error_or_face_in_the_status_column() -> None:
    face = {"box": [10, 20, 30, 40], "score": 0.9, "label": "sad", "probability": 0.7, "probabilities": {"happy": 0.3, "sad": 0.7}}
    got = rows(("cup.png", None, []), ("broken.jpg", None, [], "decode_error: not an image"), ("clip.mp4", 4, [face]))
    assert [(r["input"], r["status"]) for r in got] == [("cup.png", "no_face"), ("broken.jpg", "error"), ("clip.mp4", "face")]
    assert got[0]["label"] == "" and got[0]["error"] == "" and got[1]["error"].startswith("decode_error")
    assert (got[2]["frame"], got[2]["face"], got[2]["x"], got[2]["label"], got[2]["p_sad"]) == ("4", "0", "10", "sad", "0.7")
