# Reading sequence numbers that only ever grow, across reboots and power cuts.
#
# Writing the counter to flash for every reading would wear it out, so the
# device reserves numbers in blocks: before using the first number of a block
# it persists the block's end (temporary file + atomic rename). After a reset
# numbering resumes from the persisted end, so a number is never reused; a
# reset costs at most one block of unused numbers (a visible gap, never a repeat).
import os

from micropython import const

BLOCK = const(100)


class SequenceNumbers:
    def __init__(self, path="/state/seq"):
        self._path = path
        self._next = self._load()
        self._limit = self._next

    def _load(self):
        try:
            with open(self._path) as f:
                return int(f.read())
        except (OSError, ValueError):
            return 1

    def _reserve(self):
        limit = self._next + BLOCK
        tmp = self._path + ".tmp"
        try:
            f = open(tmp, "w")
        except OSError:
            os.mkdir(self._path.rpartition("/")[0])  # first boot: the folder does not exist yet
            f = open(tmp, "w")
        with f:
            f.write(str(limit))
        os.rename(tmp, self._path)
        self._limit = limit

    def next(self):
        if self._next >= self._limit:
            self._reserve()
        n = self._next
        self._next += 1
        return n
