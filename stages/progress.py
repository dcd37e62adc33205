"""tqdm progress bars on stderr: live on a terminal, a line every 30 s when stderr is a file or pipe."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def bar(total: int | None, desc: str, unit: str, **kw: Any) -> tqdm:
    """A bar for long work; redirected output (logs of long runs) gets sparse updates, not a flood."""
    live = sys.stderr.isatty()
    every = 0.5 if live else 30.0
    # maxinterval too: tqdm's monitor thread otherwise forces a redraw every 10 s whatever mininterval says.
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=every, maxinterval=max(every, 10.0),
                smoothing=0.1, **kw)
