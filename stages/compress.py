"""compress: JPEG recompression (quality 40 by default), the input tree kept below images/compressed."""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.base import Context, Item, Outcome, Params, Stage, register
from stages.images import Decoded, atomic_write, encode_jpeg


@dataclass(frozen=True)
class CompressParams(Params):
    quality: int = field(default=40, metadata={"help": "JPEG quality of the recompressed images (1-100)"})
    max_side: int = field(default=0, metadata={"help": "shrink so the longer side is at most this many px (0: keep size)"})

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"compress.quality must be 1-100, got {self.quality}")
        if self.max_side < 0:
            raise ValueError(f"compress.max_side must be >= 0, got {self.max_side}")


@register
class Compress(Stage[CompressParams]):
    name = "compress"
    Params = CompressParams
    version = 2  # 2: encoded from the array by simplejpeg (bytes differ from Pillow's, same quality)
    columns = ("bytes_in", "bytes_out")
    produces_file = True

    @property
    def reads_full(self) -> bool:
        """Decodes the full-resolution image (unless it shrinks it): later stages reduce from those pixels."""
        return not self.params.max_side

    def process(self, item: Item, image: Decoded, ctx: Context) -> Outcome:
        p: CompressParams = self.params
        # The array, not a PIL image: the encoder reads it as it is (a PIL copy of 12 MP costs a third of the encode).
        pixels = image.at_most(p.max_side) if p.max_side else image.full()
        data = encode_jpeg(pixels, p.quality)
        path, rel = ctx.artifact_path("compressed", item.key, ".jpg")
        atomic_write(path, data)
        metrics = {"bytes_in": len(image.data), "bytes_out": len(data), "width": int(pixels.shape[1]), "height": int(pixels.shape[0])}
        return Outcome(item.key, artifact=rel, metrics=metrics)
