"""Every event of a live trace, kept for the views that read the whole trace
at its end (--explain, --html), with bounded memory."""

from __future__ import annotations

from ..model.events import ExecEvent, Header, ProcessEvent

# What a live --explain or --html keeps, counted in objects: an event is one,
# an exec one more for each argument (a traced process chooses its argv: up
# to 1,024 one-byte arguments in the kernel's 2 KiB, some 86 KB of objects).
# Later events are counted, not kept.
KEPT_MAX = 4_000_000


class Collector:
    """A sink (commands/session.py's protocol) that keeps a live trace's
    events, up to KEPT_MAX objects, for the views made from all of them at
    the end (--explain, --html)."""

    def __init__(self) -> None:
        self.head: Header | None = None
        self.kept: list[ProcessEvent] = []
        self.left_out = 0
        self._room = KEPT_MAX

    def header(self, h: Header) -> None:
        self.head = h

    def events(self, batch: list[ProcessEvent]) -> None:
        if self.left_out:
            self.left_out += len(batch)
            return
        room = self._room - len(batch) - sum(len(ev.argv) for ev in batch
                                              if type(ev) is ExecEvent)
        if room >= 0:
            self._room = room
            self.kept.extend(batch)
            return
        for i, ev in enumerate(batch):  # the batch that fills it, one by one
            cost = 1 + len(ev.argv) if type(ev) is ExecEvent else 1
            if cost > self._room:
                self.left_out = len(batch) - i
                return
            self._room -= cost
            self.kept.append(ev)

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


def whole_trace_views(kept: Collector, html: str | None, explain: bool) -> list[str]:
    """From the kept events: --html's page written to html, and --explain's
    lines returned; each says what was not kept."""
    assert kept.head is not None
    note = kept.note()
    if html:
        from .html import write_html

        write_html(html, kept.head, kept.kept, note)
    if not explain:
        return []
    from .explain import explain as explain_lines

    return explain_lines(kept.head, kept.kept) + ([f"({note})"] if note else [])
