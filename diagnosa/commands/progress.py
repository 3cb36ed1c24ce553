"""Live progress of long commands (``data generate``, ``data ingest``, ``run --local``) on stderr.

A :class:`Board` is a list of steps, each with its elapsed time and what it is doing now, redrawn in place
by ``rich`` (already installed with the SageMaker SDK). It shows only when stderr is a terminal and
``--quiet`` was not given: piped or redirected, the commands write exactly what they wrote before. The
board never writes to stdout; a line a command prints there while the board is showing goes through
:meth:`Board.echo`, which takes the board off the screen, prints the line and draws the board again below
it, so the two never tear each other on a terminal.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Callable, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from inference.limits import printable_line, printable_lines

Detail = Callable[[], str]  # what a running step is doing now, asked at each redraw (e.g. its log's last line)
MARKS = {"done": ("✓", "green"), "failed": ("✗", "red"), "reused": ("↺", "cyan")}


@dataclass
class _Row:
    name: str
    started: float
    detail: str | Detail = ""
    ended: float | None = None
    outcome: str = ""  # done | failed | reused, once ended
    note: str = ""  # shown after an ended step's time (a failure reason, a cache source)
    spinner: Spinner = field(default_factory=lambda: Spinner("dots", style="yellow"))


class Board:
    """Steps with their elapsed time and phase, redrawn in place on ``stream`` while the board is open.

    With ``enabled`` false every method but :meth:`echo` does nothing, and :meth:`echo` is a plain print.
    """

    def __init__(self, title: str, *, enabled: bool, stream: TextIO | None = None, transient: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.title = title
        self.enabled = enabled
        self.clock = clock
        self.started = clock()
        self._rows: dict[str, _Row] = {}
        # Two locks: the rows (held briefly, also by rich's refresh thread while it draws) and the screen
        # (stopping and starting the display, which waits for that thread: never while holding the rows).
        self._rows_lock = threading.Lock()
        self._screen_lock = threading.Lock()
        self._console = Console(file=stream or sys.stderr, force_terminal=True, highlight=False)
        self._transient = transient
        self._live = self._new_live() if enabled else None

    @classmethod
    def for_terminal(cls, title: str, *, quiet: bool, **options) -> Board:
        """A board that shows only on a terminal's stderr, and not with ``--quiet``."""
        stream = options.pop("stream", None) or sys.stderr
        return cls(title, enabled=not quiet and _is_terminal(stream), stream=stream, **options)

    # ------------------------------------------------------------------------------------------ lifetime
    def __enter__(self) -> Board:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        with self._rows_lock:
            for row in self._rows.values():  # what was still running when the command ended
                if row.ended is None:
                    self._close(row, "failed" if kind else "done", "interrupted" if kind is KeyboardInterrupt else "")
        if self._live is not None:
            with self._screen_lock:
                self._live.stop()

    # ------------------------------------------------------------------------------------------ steps
    def start(self, name: str, detail: str | Detail = "") -> None:
        with self._rows_lock:
            self._rows[name] = _Row(name, self.clock(), detail)
        self.refresh()

    def end(self, name: str, outcome: str = "done", note: str = "") -> None:
        if outcome not in MARKS:
            raise ValueError(f"outcome must be one of {sorted(MARKS)}, got {outcome!r}")
        with self._rows_lock:
            row = self._rows.get(name)
            if row is not None and row.ended is None:
                self._close(row, outcome, note)
        self.refresh()

    def phase(self, name: str, detail: str | Detail = "") -> None:
        """For a command that is one phase after another: the running phase is done and ``name`` starts, or,
        when ``name`` is the running phase, its detail changes (e.g. how far it is)."""
        with self._rows_lock:
            running = [row for row in self._rows.values() if row.ended is None]
            if [row.name for row in running] == [name]:
                running[0].detail = detail
            else:
                for row in running:
                    self._close(row, "done", "")
                self._rows[name] = _Row(name, self.clock(), detail)
        self.refresh()

    def echo(self, line: str) -> None:
        """Print a line to stdout, as the command always has, without tearing the board; each of its control or
        format characters escaped (a step's failure reason quotes what it refused)."""
        line = printable_lines(line)
        with self._screen_lock:
            live = self._live if self._live is not None and self._live.is_started else None
            if live is not None and _same_terminal(sys.stdout, live.console.file):
                live.transient = True
                live.stop()  # a transient stop erases the board; then the line; then the board again below it,
                print(line, flush=True)  # drawn by a new display (one that has not drawn yet erases nothing above)
                self._live = self._new_live()
                self._live.start(refresh=True)
            else:
                print(line, flush=True)

    def _new_live(self) -> Live:
        return Live(console=self._console, get_renderable=self.render, transient=self._transient,
                    refresh_per_second=2, redirect_stdout=False, redirect_stderr=False)

    def refresh(self) -> None:
        if self._live is not None and self._live.is_started:
            self._live.refresh()

    # ------------------------------------------------------------------------------------------ drawing
    def render(self) -> Group:
        with self._rows_lock:
            rows = [dataclasses.replace(row) for row in self._rows.values()]
            now = self.clock()
        table = Table.grid(padding=(0, 1))
        table.add_column(width=1, no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis", ratio=1, style="dim")
        for row in rows:
            mark: RenderableType
            if row.ended is None:
                mark, elapsed = row.spinner, now - row.started
                detail = row.detail() if callable(row.detail) else row.detail
            else:
                symbol, style = MARKS[row.outcome]
                mark, elapsed, detail = Text(symbol, style=style), row.ended - row.started, row.note
            # A job log's last line or a failure reason may quote a column's name: rich strips BEL and CR, not ESC.
            table.add_row(mark, row.name, f"{elapsed:.1f} s", Text(printable_line(detail or "")))
        running = sum(row.ended is None for row in rows)
        heading = Text.assemble((self.title, "bold"), f"  {now - self.started:.0f} s",
                                f" · {running} running" if running else "")
        return Group(heading, table)

    def _close(self, row: _Row, outcome: str, note: str) -> None:
        row.ended, row.outcome, row.note = self.clock(), outcome, note


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _same_terminal(one: IO[str], other: IO[str]) -> bool:
    """Whether two streams draw on the same terminal (then a stdout line must make room for the board)."""
    try:
        if not (one.isatty() and other.isatty()):
            return False
        return os.path.samestat(os.fstat(one.fileno()), os.fstat(other.fileno()))
    except (AttributeError, ValueError, OSError):
        return False


def follow_steps(board: Board) -> Callable[..., None]:
    """The executor's ``on_step``: a running step shows its job log's last line (its phase), an ended one its
    outcome."""
    from pipelines.local_jobs import last_line

    def follow(event) -> None:  # a pipelines.executor.StepEvent
        if event.status == "Executing":
            log = event.log
            board.start(event.step, (lambda: last_line(log)) if log is not None else "")
        else:
            board.end(event.step, {"Succeeded": "done", "Reused": "reused"}.get(event.status, "failed"), event.note)
    return follow
