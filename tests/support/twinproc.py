"""A device twin process for tests: start it, wait for what it logs, stop it, power-cut it.

A Process (process.py) that, as `warden twin run` and a board do, starts again after a reset
(exit RESET_EXIT) as a soft reset, with a "--- reset ---" line between the runs in `lines`."""
from warden.board import twin as twinlib

from .process import Process


class Twin(Process):
    name = "twin"

    def __init__(self, flash, heap=twinlib.DEFAULT_HEAP, restart_on_reset=True, binary=None):
        super().__init__()
        self.flash = flash
        self.heap = heap
        self.binary = binary     # another unix port (support.devrun.micropython32()), or the twin's
        self.restart_on_reset = restart_on_reset
        self.resets = 0
        self._cause = twinlib.RESET_PWRON

    def start(self, reset_cause=twinlib.RESET_PWRON):
        self._cause = reset_cause
        return super().start()

    def command(self):
        return twinlib.twin_command(self.flash, self.heap, self._cause, self.binary)

    def _restart(self, code):
        if code != twinlib.RESET_EXIT or not self.restart_on_reset:
            return False
        self.resets += 1
        self.out.note("--- reset ---")
        self._cause = twinlib.RESET_SOFT
        self.proc = self._spawn()
        return True
