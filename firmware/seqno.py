# Reading sequence numbers that only ever grow, across reboots and power cuts.
#
# Writing the counter to flash for every reading would wear it out, so the
# device reserves numbers in blocks: before using the first number of a block
# it persists the block's end (temporary file + atomic rename). After a reset
# numbering resumes from the persisted end, so a number is never reused; a
# reset costs at most one block of unused numbers (a visible gap, never a repeat).
from micropython import const

from firmware.core import replace

BLOCK = const(100)


class SequenceNumbers:
    # (Two methods only: each function a module keeps costs heap for the device's life.)
    def __init__(self, path="/state/seq"):
        self._path = path
        try:
            with open(path) as f:
                n = int(f.read())
        except (OSError, ValueError):
            n = 1   # the first boot (or a lost file: numbers restart, and the host sees it)
        self._next = self._limit = n

    def next(self):
        n = self._next
        if n >= self._limit:
            replace(self._path, str(n + BLOCK))  # before the block's first number is used (raises: not used)
            self._limit = n + BLOCK
        self._next = n + 1
        return n
