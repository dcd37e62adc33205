"""Columns, statuses and the reason vocabulary: the one place they are defined."""

from __future__ import annotations

SCHEMA_VERSION = 1

KEPT, REJECTED, FAILED = "kept", "rejected", "failed"
STATUSES = (KEPT, REJECTED, FAILED)

#: Every reason a row may carry, with the text `status` and the reports show.
REASONS: dict[str, str] = {
    "decode_error": "the file is not a decodable image (empty, truncated, not an image)",
    "too_large": "more pixels than the decompression-bomb limit",
    "unreadable": "the file could not be read (permissions, symlink loop, I/O error)",
    "unsafe_path": "a zip member with an absolute or '..' path",
    "no_face": "no face found",
    "multiple_faces": "more than one face and the policy rejects that",
    "face_too_small": "the face is below the minimum size",
    "low_confidence": "the detector's score is below the minimum",
    "text": "text found in the image",
    "blurry": "sharpness below the threshold",
    "too_dark": "too dark",
    "too_bright": "too bright",
    "low_contrast": "contrast below the threshold",
    "profile_pose": "head turned too far from frontal",
    "low_detail": "the face holds less detail than the minimum (an enlarged or smoothed image)",
    "duplicate": "a duplicate of a kept image",
    "label_conflict": "duplicates that carry different labels",
    "annotator_disagreement": "no majority among the annotators",
    "unlabeled": "no label for this image",
    "stage_error": "the stage raised an error on this image",
    "worker_crash": "the worker process died on this shard",
}

#: Columns of every per-stage part file (manifests/<stage>/part-N.parquet).
OUTCOME_COLUMNS = ("key", "status", "reason", "detail", "artifact", "metrics")
#: Their binary column: a stage's per-item data for its own dataset step (Outcome.blob), read apart.
BLOB_COLUMN = "blob"

#: Columns of the ingest part files (manifests/ingest/part-N.parquet).
ITEM_COLUMNS = ("key", "source", "path", "member", "label", "group", "meta", "status", "reason", "detail")

#: Leading columns of WORK/manifest.csv; stage columns follow in stage order.
MANIFEST_COLUMNS = ("key", "source", "file", "label", "group", "width", "height")

#: Columns of WORK/reports/rejected.csv.
REJECTED_COLUMNS = ("key", "source", "stage", "reason", "detail")


def check_reason(reason: str) -> str:
    """Return *reason* if it is in the vocabulary, else raise ValueError."""
    if reason not in REASONS:
        raise ValueError(f"unknown reason code {reason!r}; add it to manifests/schema.py")
    return reason
