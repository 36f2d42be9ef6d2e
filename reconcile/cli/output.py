"""What a run shows while it works: plain lines for people and pipelines, and on a
terminal a live status line of the actions under way.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from ..model import Action, ActionResult
from . import render

class Output:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.json = args.output == "json"
        # Markdown (plan, apply, rebuild): one document on stdout at the end, as with JSON
        self.markdown = args.output == "markdown"
        # apply/destroy with -q, JSON or Markdown: no plan, no per-action lines; only recap and errors
        self.quiet_apply = args.quiet or self.json or self.markdown

    @property
    def document(self) -> bool:
        """Whether stdout holds one document (JSON or Markdown) and nothing else."""
        return self.json or self.markdown

    def out(self, text: str) -> None:
        print(text, flush=True)

    def info(self, text: str) -> None:
        if not self.args.quiet and not self.document:
            print(text, flush=True)

    def err(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """Something the user should know while waiting; on stderr, so JSON stays clean."""
        if not self.args.quiet:
            print(text, file=sys.stderr, flush=True)


class Progress:
    """Progress of an apply: a line per finished action, and a live view on a terminal.

    Without a terminal (a pipeline log) each action prints one line with its duration when
    it ends. On a terminal the same lines scroll above a status line that shows what runs
    right now and for how long, redrawn a few times a second.
    """

    def __init__(self, console: Output, total: int, live: bool, prefix: str = ""):
        self.console, self.total, self.live, self.prefix = console, total, live, prefix
        self.running: dict[str, tuple[Action, float]] = {}
        self.done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._redraw, name="reconcile-progress", daemon=True) if live else None
        self._status_shown = False

    def __enter__(self) -> Progress:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        with self._lock:
            self._clear()

    def started(self, action: Action, when: float) -> None:
        with self._lock:
            self.running[action.id] = (action, time.monotonic())

    def finished(self, result: ActionResult) -> None:
        with self._lock:
            self.running.pop(result.action.id, None)
            self.done += 1
            if self.console.quiet_apply:
                return
            self._clear()
            print(self.prefix + render.result_line(result).lstrip() if self.prefix else render.result_line(result),
                  flush=True)
            self._draw()

    def line(self, text: str) -> None:
        """A line among the results (a readiness condition that came true), from any thread."""
        with self._lock:
            if self.console.quiet_apply:
                return
            self._clear()
            print(text, flush=True)
            self._draw()

    def _clear(self) -> None:
        if self._status_shown:
            sys.stdout.write("\r\x1b[K")
            self._status_shown = False

    def _draw(self) -> None:
        if not self.live or not self.running:
            return
        now = time.monotonic()
        parts = [f"{a.kind.value} {a.name} {now - t0:.0f}s" for a, t0 in sorted(self.running.values(), key=lambda v: v[1])]
        text = f"[{self.done}/{self.total}] running: " + ", ".join(parts)
        width = max(20, _terminal_width() - 1)
        sys.stdout.write("\r\x1b[K" + (text if len(text) <= width else text[: width - 3] + "..."))
        sys.stdout.flush()
        self._status_shown = True

    def _redraw(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                self._clear()
                self._draw()


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80  # 0: a terminal with no size set
    except OSError:
        return 80
