# Signed over-the-air updates on the device, independent of the transport: receiving.
#
# The transport (MQTT chunks) drives an Updater:
#   begin(manifest, signature[, kind]) -> offset   the checks of firmware/ota_check.py, in
#       the order of docs/design.md, "Signed updates" (size bound, trusted key, RSA-PSS signature, target, kind, counter),
#       then: no update awaiting its self-test, the size fits the slot. Returns where the
#       payload should (re)start: 0, or the last durable offset of the same update after a
#       dropped session or a reboot.
#   write(offset, chunk) -> next offset            streams into the inactive slot, hashing
#   finish() -> dict                               size and SHA-256 must match; only then the
#       swap (set_boot, or the app slot pointer); the device must reset next.
# After the reset, firmware/ota_state.py confirms the update (and only then persists its
# security counter) or rolls it back. Every refusal raises OTAError(reason) and leaves the
# running image as it was.
#
# The state files and what the engine shares with its checks and sinks are in
# firmware/ota_state.py. The sinks (ota_fw.py, ota_app.py, ota_keys.py) and the checks load
# only while needed. Import this module only while an update is received; it is unloaded
# with the rest of the OTA code (firmware/otacmd.py, TRANSFER).
import json
from binascii import hexlify

from firmware import core
from firmware.core import replace as put
from firmware.ota_state import PENDING, SLOT, get, rm, running

JOB = "/state/ota.job"   # manifest and signature of the update being received
POS = "/state/ota.pos"   # firmware: the durable offset (firmware/ota_fw.py)


class OTAError(Exception):
    """An update refused or failed; args[0] is the reason (what the device reports)."""

_swapped = False  # finish() swapped in this boot: nothing to judge or start until the reset

_SINKS = ("firmware.ota_fw", "firmware.ota_app", "firmware.ota_keys")


def check(manifest, signature, target, kind=None):
    """The checks of firmware/ota_check.py on an update's (or a rollback's) head, in order: size
    bound, trusted key, RSA-PSS signature, target, kind, a counter newer than the installed one.
    Returns the manifest's fields; OTAError at the first failure."""
    from firmware import ota_check
    try:
        f, n, e = ota_check.prepare(manifest, signature)
    finally:
        core.unload(("firmware.ota_check",))  # out of the heap for the signature check (the peak)
    import hashlib
    import rsapss
    try:
        rsapss.verify(n, signature, hashlib.sha256(manifest).digest(), e)
    except ValueError as x:
        raise OTAError("bad signature: the manifest was altered or not signed by key %s (%s)"
                       % (hexlify(f[1]).decode(), x.args[0][8:]))
    finally:
        n = None
        core.unload(("rsapss",))
    from firmware import ota_check
    try:
        ota_check.policy(f, target, kind)
    finally:
        core.unload(("firmware.ota_check",))
    return f


def _job_bytes(m, s):
    return bytes((len(m) >> 8, len(m) & 255, len(s) >> 8, len(s) & 255)) + m + s


class Updater:
    def __init__(self, target):
        self.target = target
        self._m = None  # manifest bytes of the update being received
        self._sink = None

    # -- receiving -----------------------------------------------------------------------
    def job(self):
        """The update being received: kind, version, size and offset; None if there is none."""
        if self._m is None:
            return None
        return {"kind": self._f[2], "version": self._f[4], "size": self.size, "offset": self.pos}

    def begin(self, manifest, signature, kind=None):
        """Check an update's manifest and signature; returns the payload offset to send from."""
        if _swapped:
            raise OTAError("an update was just installed: reset to run it first")
        f = check(manifest, signature, self.target, kind)
        if get(PENDING):
            from firmware import ota_state
            p = ota_state.pending()  # one no longer running was rolled back: recorded, cleared
            core.unload(("firmware.ota_state",))
            if p:
                raise OTAError("%s %s is installed and awaiting its self-test: confirm or roll back first"
                               % (p["kind"], p["version"]))
        job = _job_bytes(bytes(manifest), bytes(signature))
        if self._m == job:
            return self.pos  # the same update again in this boot: carry on
        self.abort(keep_files=True)
        if f[2] == "firmware":
            from firmware.ota_fw import Sink
        elif f[2] == "keys":
            from firmware.ota_keys import Sink
        else:
            from firmware.ota_app import Sink
        sink = Sink()
        cap = sink.capacity()
        if f[6] > cap:
            core.unload(_SINKS)
            raise OTAError("too large for the slot: %d bytes > %d" % (f[6], cap))
        import hashlib
        h = hashlib.sha256()
        try:
            with open(JOB, "rb") as jf:
                same = jf.read() == job
        except OSError:
            same = False
        if same:
            pos = sink.resume(h, f[6])  # rehash what is already durable, carry on from there
        else:
            self._drop_files()
            rm(SLOT % sink.slot)   # what it held is being overwritten: no rollback to it
            pos = sink.start()
            put(JOB, job)
        self._m, self._f, self._sink, self._h, self.pos, self.size = job, f, sink, h, pos, f[6]
        return pos

    def write(self, offset, chunk):
        """Take payload bytes at `offset`; returns the next offset wanted. Bytes already taken
        are skipped; a chunk beyond the next offset is ignored (the return value says where
        to resume). More bytes than the manifest signed end the update."""
        if self._sink is None:
            raise OTAError("no update in progress: begin first")
        pos = self.pos
        end = offset + len(chunk)
        if offset > pos or end <= pos:
            return pos
        if end > self.size:
            self.abort()
            raise OTAError("payload too long: more than the signed %d bytes" % self.size)
        mv = memoryview(chunk)[pos - offset:]
        self._h.update(mv)
        try:
            self._sink.write(mv)
        except Exception as e:
            # Short of heap: what is durable stays, and a push run again resumes from it.
            self.abort(keep_files=isinstance(e, MemoryError))
            raise e if isinstance(e, OTAError) else OTAError("flash write failed: %r" % e)
        self.pos = end
        return end

    def finish(self):
        """Check the payload, swap, and return what was installed; the device must reset next."""
        global _swapped
        if self._sink is None:
            raise OTAError("no update in progress: begin first")
        f = self._f
        if self.pos < self.size:
            raise OTAError("payload short: %d of %d bytes" % (self.pos, self.size))
        sink = self._sink
        import gc
        gc.collect()   # the chunks' garbage: installing opens files (littlefs buffers in one piece each)
        p = {"kind": f[2], "version": f[4], "counter": f[5], "slot": sink.slot, "prev": running(f[2])}
        try:
            sink.close()
            if self._h.digest() != f[7]:
                raise OTAError("payload altered: its SHA-256 does not match the signed manifest")
            put(PENDING, json.dumps(p))
            if sink.slot != "keys":   # what a signed rollback may come back to (firmware/ota_rollback.py)
                put(SLOT % sink.slot, json.dumps({"kind": f[2], "version": f[4], "counter": f[5], "size": f[6],
                                                  "sha": hexlify(f[7]).decode()}))
            sink.commit(f)  # a key set (slot "keys") is in force now: it records itself, clears PENDING
        except Exception as e:
            rm(PENDING)
            self.abort(keep_files=isinstance(e, MemoryError))   # (as in write)
            raise e if isinstance(e, OTAError) else OTAError("install failed: %r" % e)
        if sink.slot != "keys":
            _swapped = True  # code changed: nothing more until the reset
        self._drop_files()
        self._m = self._sink = None
        core.unload(_SINKS)
        return p

    def abort(self, keep_files=False):
        """Forget the update being received (the running image is untouched)."""
        if self._sink is not None:
            try:
                self._sink.close()
            except Exception:
                pass
        self._m = self._sink = None
        core.unload(_SINKS)
        if not keep_files:
            self._drop_files()

    @staticmethod
    def _drop_files():
        for p in (JOB, POS, "/app/stage"):
            rm(p)
