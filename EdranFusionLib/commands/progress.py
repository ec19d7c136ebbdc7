"""Terminal progress bars for long work, fed with fractions done; silent with --quiet."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm

_STEPS = 1000


@contextlib.contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[Callable[[float], None]]:
    """Yield a callback taking the fraction done (0..1). The bar appears only if the work takes over a second."""
    if quiet:
        yield lambda _fraction: None
        return
    bar = tqdm(total=_STEPS, desc=description, delay=1.0, file=sys.stderr, leave=False,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def update(fraction: float) -> None:
        bar.update(max(0, round(fraction * _STEPS) - bar.n))

    try:
        yield update
    finally:
        bar.close()
