"""Watch bookkeeping shared by both clients: where a broken watch resumes,
which events it has already delivered, and a job's tasks as events arrive."""

from __future__ import annotations

from collections import Counter

from .results import TaskEvent, TaskInfo, TaskState


class Cursor:
    """Resumes a watch without missing or repeating a change. One log entry
    can change many tasks (a cancel cascade, a batch of writes), all at one
    revision, and a stream can break between them: the watch resumes from
    the revision before the last one received and skips the tasks it already
    delivered at that revision."""

    def __init__(self, from_revision: int) -> None:
        self.last = from_revision
        self._at_last: set[int] = set()

    def resume_from(self) -> int:
        return self.last - 1 if self._at_last else self.last

    def accept(self, revision: int, task_id: int) -> bool:
        """Whether an event is new; records it when it is."""
        if revision > self.last:
            self.last = revision
            self._at_last.clear()
        elif revision < self.last or task_id in self._at_last:
            return False
        self._at_last.add(task_id)
        return True


class OutputCursor:
    """Where a broken output stream resumes: the same attempt (the first
    chunk names it), from the bytes already received."""

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self.offset = 0

    def accept(self, attempt: int, offset: int, data: bytes) -> bytes:
        """The part of a chunk not delivered before."""
        self.attempt = attempt
        fresh = data[max(self.offset - offset, 0) :]
        self.offset = max(self.offset, offset + len(data))
        return fresh


class JobView:
    """The latest state of each task of a job, from its events."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tasks: dict[int, TaskInfo] = {}

    def update(self, event: TaskEvent) -> None:
        self.tasks[event.task.id] = event.task

    def counts(self) -> Counter[TaskState]:
        return Counter(t.state for t in self.tasks.values())

    def finished(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state.terminal)

    def all_ended(self) -> bool:
        """Every watched task seen, and ended: how a finished watch is told
        from a stream a replica closed early (one shutting down ends its
        streams without an error)."""
        return len(self.tasks) >= self.total and self.finished() == len(self.tasks)
