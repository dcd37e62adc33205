"""A compress stage whose worker process dies on one image: exercises retries and failed shards."""

from __future__ import annotations

import os

from stages.compress import Compress


class DiesOnPoison(Compress):
    def process(self, item, image, ctx):  # type: ignore[no-untyped-def]
        if "poison" in item.key:
            os._exit(3)  # the whole worker process dies, as a segfaulting decoder would
        return super().process(item, image, ctx)
