"""A progress bar of a job's tasks by state, for long waits."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from ._watch import JobView
from .results import TaskState

_ORDER = [s for s in TaskState if s != TaskState.UNKNOWN]


class Progress:
    """Finished tasks out of all, with the count in each state beside it."""

    def __init__(self, job_id: int, total: int, enabled: bool) -> None:
        self._bar: tqdm[Any] | None = (
            tqdm(total=total, desc=f"job {job_id}", unit="task") if enabled else None
        )

    def show(self, view: JobView) -> None:
        if self._bar is None:
            return
        counts = view.counts()
        self._bar.set_postfix_str(
            " ".join(f"{s.value}={counts[s]}" for s in _ORDER if counts[s]), refresh=False
        )
        self._bar.update(view.finished() - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
