"""Every event of a live trace, kept for the views that read the whole trace
at its end (--explain, --html), with bounded memory."""

from __future__ import annotations

from ..model.events import Header, ProcessEvent

EVENTS_MAX = 2_000_000  # kept for a live --explain; later ones are counted, not read


class Collector:
    """A sink (commands/session.py's protocol) that keeps a live trace's
    events, up to EVENTS_MAX, for the views made from all of them at the
    end (--explain, --html)."""

    def __init__(self) -> None:
        self.head: Header | None = None
        self.kept: list[ProcessEvent] = []
        self.left_out = 0

    def header(self, h: Header) -> None:
        self.head = h

    def events(self, batch: list[ProcessEvent]) -> None:
        room = EVENTS_MAX - len(self.kept)
        if len(batch) > room:
            self.left_out += len(batch) - max(room, 0)
            batch = batch[:max(room, 0)]
        self.kept.extend(batch)

    def flush(self) -> None:
        pass

    def summary(self, s: object) -> None:
        pass

    def close(self) -> None:
        pass

    def note(self) -> str:
        """What a view made from the kept events should say of the rest."""
        if not self.left_out:
            return ""
        return (f"made from the first {len(self.kept):,} events: "
                f"{self.left_out:,} later ones were not kept")
