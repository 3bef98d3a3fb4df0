# Store-and-forward: readings that could not be delivered wait in the encrypted
# log store (as READING records) and are sent, oldest first, once the broker is
# back.
#
# - add(): a reading the device could not get acknowledged is appended durably,
#   so it survives a reset or a power cut.
# - drain(): sends waiting readings with QoS 1 for at most `budget_ms` per call,
#   so live readings keep flowing while a backlog empties behind them (every
#   reading carries `seq` and `ts`; consumers order by them).
# - the cursor (the store sequence number of the last acknowledged record) is
#   persisted to /state/outbox every CURSOR_EVERY (100) acknowledgements and whenever
#   the backlog empties or the link drops; after a power cut during a drain at
#   most that many acknowledged readings are sent again (consumers drop the
#   duplicate by `seq`), never one that was not acknowledged.
# - /state/outbox also says whether the backlog was empty ("<cursor> e"); add()
#   clears that before it keeps the first reading of an outage. A boot with
#   nothing waiting then does not read the log at all (the reader costs ~4.7 KB
#   of heap on top of the session).
# - If the store's quota forces it to drop its oldest segment, readings in it
#   are lost and the store logs the drop (a DROP record, shown by warden logs).
import time

from micropython import const

from firmware import core
from firmware.core import replace

READING = const(2)  # logstore.READING
CURSOR_EVERY = const(100)


class Outbox:
    def __init__(self, store, sensors, path="/state/outbox"):
        self._s = store
        self._sensors = sensors
        self._path = path
        self._reader = None
        self.sent = 0
        # waiting: readings may wait (unknown after a boot unless the state says empty)
        try:
            with open(path) as f:
                v = f.read().split()
            c, empty = int(v[0]), v[1:] == ["e"]
        except (OSError, ValueError, IndexError):
            c, empty = 0, False
        self._cursor = c
        self.waiting = not empty
        self._saved = (c, empty)

    def save(self):
        """Persist the cursor and whether the backlog is empty (temporary file + atomic
        rename) if either changed."""
        st = (self._cursor, not self.waiting)
        if st == self._saved:
            return
        replace(self._path, "%d e" % st[0] if st[1] else str(st[0]))
        self._saved = st

    def add(self, seq, ts, values):
        if not self.waiting:
            self.waiting = True
            try:
                self.save()  # not empty any more: before the reading, so a reset cannot hide it
            except Exception:
                pass  # then the reading waits for the next outage's drain (it is after the cursor)
        self._s.append(READING, self._sensors.pack(seq, ts, values), True)

    def drain(self, publish, budget_ms):
        """Publish waiting readings for up to budget_ms; returns how many were sent.

        `publish(payload)` must raise if the reading was not acknowledged; the
        record then stays waiting (the error propagates after the cursor is saved)."""
        if not self.waiting:
            return 0
        r = self._reader
        if r is None:
            # The reader (its module, buffers and an open segment, ~4.7 KB) loads on top of a
            # session: from a collected heap, so it finds room (once per backlog).
            import gc
            gc.collect()
            r = self._reader = self._s.reader(self._cursor + 1)
        t0 = time.ticks_ms()
        n = 0
        try:
            while time.ticks_diff(time.ticks_ms(), t0) < budget_ms:
                if not r.next():
                    self.waiting = False
                    break
                if r.kind == READING:
                    publish(self._sensors.unpack_json(r.payload))
                    n += 1
                self._cursor = r.seq
                if n and n % CURSOR_EVERY == 0:
                    self.save()
        except Exception:
            # The failed record is re-read from the cursor next time.
            self.release()
            self.save()
            raise
        finally:
            self.sent += n
        if not self.waiting:
            self.save()
            self.release()
        return n

    def release(self):
        """Drop the reader and its module once the backlog is empty (~4.7 KB of heap); the next
        drain makes a new one."""
        self._reader = None
        core.unload(("logread",))  # what reading the backlog loaded
