"""Stopping a search from outside: SIGTERM (what cluster schedulers, `timeout` and container
runtimes send) stops it the way Ctrl-C does, and a second signal ends it at once.

First SIGTERM: Ray Tune is asked to stop (through the SIGUSR1 handler it installs while it runs),
so running trials end, every record stays consistent and the run can be resumed. Before or after
Tune runs, the first signal raises `SearchStopped` instead, which unwinds normally.
Second SIGTERM or SIGINT while stopping: every process this driver started is killed and the
driver exits at once (128 + the signal). Records are written atomically, so none is corrupt;
trials cut short are trained again on resume.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


class SearchStopped(KeyboardInterrupt):
    """A stop signal (`signum`) arrived outside Ray Tune's run loop."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signal.Signals(signum).name}")
        self.signum = signum


class StopSignals:
    """Context manager for the whole search. `received` is the first stop signal (or None)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.tuning = False  # True while Tune's own handlers are installed
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def reinstall(self) -> None:
        """Take SIGTERM back after a library (Ray's core worker) installed its own handler."""
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # While Tune runs, it owns SIGINT: a SIGINT that reaches us then is the second one.
        second = self.received is not None or (self.tuning and signum == signal.SIGINT)
        if second:
            print("\nsecond stop signal: ending now (trials cut short train again on resume)",
                  file=sys.stderr, flush=True)
            kill_children()
            os._exit(128 + signum)
        self.received = signum
        if self.tuning:
            print("\nstop signal: ending the running trials (a second signal ends at once)",
                  file=sys.stderr, flush=True)
            signal.raise_signal(signal.SIGUSR1)  # Tune's handler: stop and return from fit()
        else:
            raise SearchStopped(signum)


def kill_children() -> None:
    """SIGKILL every process this one started (Ray's services and workers), by process id."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass
