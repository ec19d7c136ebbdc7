"""Run one long computation on a worker thread so that the caller's thread (Slicer's GUI) keeps running.

The caller polls :attr:`BackgroundRun.fraction` and :attr:`BackgroundRun.done` (e.g. from a Qt timer) and asks
for :meth:`BackgroundRun.result` once done; :meth:`BackgroundRun.cancel` is seen by the work at its next check.
Nothing here touches the caller's objects: the work must not use MRML or Qt, which belong to the caller's thread.
Torch-free, so the Slicer module can import it before PyTorch is installed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Work = Callable[[Callable[[float], None], Callable[[], bool]], Any]


class BackgroundRun:
    """``work(progress, cancel)`` started on a daemon thread at construction."""

    def __init__(self, work: Work, name: str = "EdranFusion") -> None:
        self.fraction = 0.0
        self._cancelled = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _run(self, work: Work) -> None:
        try:
            self._result = work(self._progress, self._cancelled.is_set)
        except BaseException as error:  # handed to the caller's thread by result()
            self._error = error

    def _progress(self, fraction: float) -> None:
        self.fraction = fraction

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float | None = None) -> Any:
        """The work's return value, waiting up to ``timeout`` seconds; re-raises what the work raised."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the background run is still going after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result
