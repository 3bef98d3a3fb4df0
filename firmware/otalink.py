# The OTA conversation over the device's own MQTT session (no second TLS session).
#
# The technician's tool publishes requests to cmd/<app>/<thing>/ota; the first
# byte says what it is:
#   b"B" + the update's head (WUP1, manifest and signature lengths, manifest,
#          signature: the first bytes of a .wup file)         begin / resume
#          [+ b"\0" + who (the technician's principal) [+ b"\0takeover"]]
#   b"C" + offset (4 bytes, big-endian) + payload bytes        one chunk
#   b"F"                                                       finish: check, swap, reset
#   b"S"                                                       report the OTA status
#   b"A"                                                       abort the transfer
# The device answers on dt/<app>/<thing>/ota with JSON {"step": ...}:
#   accepted {offset, size, kind, version}   the next chunk to send starts at offset
#   busy {holder}                            another technician's transfer is under way: it
#                                            goes on untouched (begin with takeover to replace it)
#   next {offset, percent}                   after every chunk: what to send next
#   rejected {reason}                        the update was refused; nothing changed
#   installed {kind, version}                swapped; the device resets now
#   confirmed / rolled back {kind, version, counter, reason} (retained) after the reset
#   status {...}                             the answer to "S"
# Stop-and-wait: the tool sends a chunk only for the offset the device asked for,
# so a drop or a reboot resumes from the device's last durable offset.
import struct
import time

from firmware import core, eventlog

_HEAD_MAX = 8 + 512 + 384


class OtaLink:
    def __init__(self, target, say):
        self.target = target
        self.say = say          # say(dict): publish on the device's ota topic
        self.updater = None
        self._pct = -1
        self.installed = None   # set by finish(): the app closes the session and resets
        self.holder = None      # who began the transfer under way (as the technician said)
        self.at = 0             # ticks_ms of the last request handled (otacmd.idle)
        self.gap = 0            # chunks were let go since the last answer (firmware/device.py)

    def handle(self, msg):
        self.at = time.ticks_ms()
        op = msg[:1]
        from firmware.ota import OTAError
        try:
            if op == b"B":
                self.begin(msg)
            elif op == b"C":
                self.chunk(msg)
            elif op == b"F":
                self.finish()
            elif op == b"S":
                self.status()
            elif op == b"R":
                self.rollback(msg)
            elif op == b"A":
                self.stop("aborted by the technician")
                self.say({"step": "aborted"})
            else:
                self.say({"step": "error", "reason": "unknown OTA request %r" % bytes(op)})
        except OTAError as e:
            self.refuse(e.args[0])
        except MemoryError:
            self.refuse("out of memory while handling the update")

    def refuse(self, reason):
        from firmware import refusal  # (stays loaded until the next reading: refusal.flush)
        refusal.note("ota", "update refused: %s" % reason, "ERROR")
        self.stop(None)
        self.say({"step": "rejected", "reason": reason})

    def stop(self, why):
        if self.updater is not None:
            self.updater.abort(keep_files=True)  # a later push resumes where this one was
            self.updater = None
            if why:
                eventlog.warn("ota", "transfer stopped: %s" % why)
        core.unload(("firmware.ota",))

    def begin(self, msg):
        from firmware.ota import OTAError, Updater
        if len(msg) > 1 + _HEAD_MAX or len(msg) < 9 or msg[1:5] != b"WUP1":
            raise OTAError("malformed update head (%d bytes)" % (len(msg) - 1))
        m, s = struct.unpack_from(">HH", msg, 5)
        end = 9 + m + s
        if m > 512 or end > len(msg) or (end < len(msg) and msg[end] != 0):
            raise OTAError("manifest oversized or head malformed (manifest %d, signature %d bytes)" % (m, s))
        who, _, flag = bytes(msg[end + 1:]).partition(b"\0")
        try:
            if len(who) > 80:
                raise UnicodeError
            who.decode()
        except UnicodeError:
            raise OTAError("the technician's name is not 1-80 bytes of UTF-8")
        if self.updater is not None and self.holder and who != self.holder and flag != b"takeover":
            # A transfer belongs to whoever began it: another technician's begin is answered,
            # and the transfer goes on untouched (an explicit takeover replaces it).
            from firmware import refusal
            refusal.note("ota", "begin refused: a transfer by %s is under way" % self.holder.decode())
            self.say({"step": "busy", "holder": self.holder.decode()})
            return
        if self.updater is None:
            self.updater = Updater(self.target)
        mv = memoryview(msg)
        off = self.updater.begin(mv[9:9 + m], mv[9 + m:end])
        self.holder = who or None
        job = self.updater.job()
        self._pct = -1
        eventlog.info("ota", "accepted %s %s (%d bytes), from offset %d" % (
            job["kind"], job["version"], job["size"], off))
        self.say({"step": "accepted", "offset": off, "size": job["size"], "kind": job["kind"],
                  "version": job["version"]})

    def chunk(self, msg):
        from firmware.ota import OTAError
        if self.updater is None or len(msg) < 5:
            raise OTAError("no update in progress: begin first")
        off = struct.unpack_from(">I", msg, 1)[0]
        nxt = self.updater.write(off, memoryview(msg)[5:])
        size = self.updater.size
        pct = nxt * 100 // size if size else 100
        if pct // 10 != self._pct // 10:
            eventlog.info("ota", "received %d of %d bytes (%d%%)" % (nxt, size, pct))
        self._pct = pct
        if self.gap:
            # chunks came that could not be kept: the tool sends again from here at once
            self.gap = 0
            self.say({"step": "next", "offset": nxt, "percent": pct, "resend": 1})
        else:
            self.say({"step": "next", "offset": nxt, "percent": pct})

    def finish(self):
        from firmware.ota import OTAError
        if self.updater is None:
            raise OTAError("no update in progress: begin first")
        p = self.updater.finish()
        self.updater = None
        d = {"step": "installed", "kind": p["kind"], "version": p["version"], "counter": p["counter"]}
        if p["slot"] == "keys":  # a key set: in force now (firmware/ota_keys.py), no reset
            self.say(d)
            d["step"] = "confirmed"
            self.say(d)
            return
        eventlog.info("ota", "installed %s %s: resetting to run it" % (p["kind"], p["version"]))
        self.say(d)
        self.installed = p

    def rollback(self, msg):
        from firmware.ota import OTAError
        if self.updater is not None:
            raise OTAError("a transfer is under way: abort it first")
        from firmware import ota_rollback
        p = ota_rollback.run(msg, self.target)
        eventlog.info("ota", "rolling back to %s %s: resetting to run it" % (p["kind"], p["version"]))
        self.say({"step": "installed", "kind": p["kind"], "version": p["version"], "counter": p["counter"]})
        self.installed = p

    def status(self):
        from firmware import ota_state
        st = ota_state.status()
        core.unload(("firmware.ota_state",))
        from firmware import ota_keys
        st["keys"] = ota_keys.status()
        core.unload(("firmware.ota_keys",))
        u = self.updater
        st["receiving"] = u.job() if u is not None else None
        if u is not None and self.holder:
            st["receiving"]["holder"] = self.holder.decode()
        st["step"] = "status"
        self.say(st)
