"""compress: JPEG recompression (quality 40 by default), the input tree kept below images/compressed."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

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
    columns = ("bytes_in", "bytes_out")
    produces_file = True

    @property
    def reads_full(self) -> bool:
        """Decodes the full-resolution image (unless it shrinks it): later stages reduce from those pixels."""
        return not self.params.max_side

    def process(self, item: Item, image: Decoded, ctx: Context) -> Outcome:
        p: CompressParams = self.params
        if p.max_side and max(image.size) > p.max_side:
            im = Image.fromarray(image.at_most(p.max_side))
        else:
            im = image.pil()
        data = encode_jpeg(im, p.quality)
        path, rel = ctx.artifact_path("compressed", item.key, ".jpg")
        atomic_write(path, data)
        metrics = {"bytes_in": len(image.data), "bytes_out": len(data), "width": im.width, "height": im.height}
        return Outcome(item.key, artifact=rel, metrics=metrics)
