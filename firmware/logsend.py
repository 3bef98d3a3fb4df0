# Remote log pulls (`warden logs pull THING` over MQTT): a request on cmd/<app>/<thing>/logs
# is answered on dt/<app>/<thing>/logs with the log's segment files as they are on flash.
# What leaves the device is ciphertext: nothing here decrypts, so no key and no reader is
# loaded, and a pull shows no more than a copy of the flash would.
#
# Loaded by firmware/device.py for one request and unloaded when it is answered: nothing is
# kept between requests, so a pull that stops anywhere (session lost, host killed) resumes
# by asking for the segment and offset the host has. The host paces the transfer: one
# request asks for a window of at most _WINDOW chunks, and the next window is asked for once
# it arrived, so the session loop takes its readings between windows and the heap holds one
# chunk (at most _CHUNK bytes + its header; less when the heap has no such hole) at a time.
#
# Requests (big-endian; id: 4 bytes the host chose, echoed in every answer to it):
#   b"I" + id                                      the index: the segments and their sizes
#   b"R" + id + segno:u32 + offset:u32 + n:u8      up to n chunks of a segment from offset
# Answers:
#   {"step":"index","id":ID,"segments":[[segno,size],...]}          JSON, oldest first
#   b"D" + id + segno:u32 + offset:u32 + size:u32 + bytes           a chunk; size is the
#        segment's size as read (it grows while the device logs); at offset == size it is empty
#   {"step":"refused","id":ID,"reason":"..."}                        nothing was sent: why
# A request is refused, with its reason, when it is retained (it would replay at every
# connect), malformed, for a segment or offset that is not there, on a device without a log
# store, or while an OTA conversation holds the session (one at a time).
# Must not: keep anything loaded or allocated after the request, or raise anything but the
# session's own errors (the loop drops the session on those).
import os
import struct

from micropython import const

from firmware import core, eventlog

_CHUNK = const(2048)   # the OTA chunk's size (tools/warden/ota/push.py): fits a fragmented heap
_WINDOW = const(16)    # chunks per request at most
_HEAD = const(17)      # b"D" + id + segno + offset + size


class Refused(Exception):
    pass


def handle(dev, msg):
    """Answer one log request (firmware/device.py took it off dev.pending); then unload."""
    rid = b"\0\0\0\0"
    try:
        if msg and len(msg) >= 5:
            rid = bytes(msg[1:5])
        try:
            _answer(dev, msg)
        except Refused as e:
            why = e.args[0]
            try:
                from firmware import refusal
                refusal.note("logs", "log request refused: " + why)
            except MemoryError:
                pass  # refused all the same
            _say(dev, '{"step":"refused","id":%d,"reason":"%s"}' % (_id(rid), why))
    finally:
        core.unload(("firmware.logsend",))


def _id(rid):
    return struct.unpack(">I", rid)[0]


def _say(dev, s):
    dev.client.publish(dev.ota_topic[:-3] + "logs", s)   # dt/<app>/<thing>/ + logs: checked at boot


def _answer(dev, msg):
    if msg is None:
        raise Refused("retained request (it would replay at every connect)")
    op = msg[0] if msg else 0
    if op == 0x49 and len(msg) == 5:       # I
        pass
    elif op == 0x52 and len(msg) == 14:    # R
        pass
    else:
        raise Refused("malformed request (%d bytes)" % len(msg))
    if dev.ota is not None:
        raise Refused("busy: an OTA conversation is under way")
    st = eventlog.store()
    if st is None:
        raise Refused("no log store on this device")
    folder = st._dir
    if op == 0x49:
        _index(dev, msg, folder)
        return
    segno, off, n = struct.unpack_from(">IIB", msg, 5)
    if not 1 <= n <= _WINDOW:
        raise Refused("window of %d chunks (1-%d)" % (n, _WINDOW))
    try:
        f = open("%s/%08x.seg" % (folder, segno), "rb")
    except OSError:
        raise Refused("no segment %d (dropped?)" % segno)
    try:
        size = f.seek(0, 2)
        if off > size:
            raise Refused("offset %d beyond the end of segment %d (%d bytes)" % (off, segno, size))
        f.seek(off)
        buf = _buffer()
        mv = memoryview(buf)
        chunk = len(buf) - _HEAD
        topic = dev.ota_topic[:-3] + "logs"
        buf[0] = 0x44   # D
        buf[1:5] = msg[1:5]
        while n:
            k = f.readinto(mv[_HEAD:_HEAD + min(chunk, size - off)]) if off < size else 0
            struct.pack_into(">III", buf, 5, segno, off, size)
            dev.client.publish(topic, mv[:_HEAD + k])
            off += k
            n -= 1
            if off >= size:
                break
    finally:
        f.close()


def _buffer():
    # One chunk's buffer, in one piece: the session's heap is fragmented (a 64-bit twin at 64k
    # may have no 2 KB hole left), so after a collection a smaller chunk is taken rather than none
    # (the host takes chunks of any size); without even the smallest, the request is refused.
    import gc
    gc.collect()
    n = _CHUNK
    while n >= 256:
        try:
            return bytearray(_HEAD + n)
        except MemoryError:
            n >>= 1
    raise Refused("out of memory for a chunk: ask again")


def _index(dev, msg, folder):
    # Logged before the sizes are read, so the index (and the pull) includes its own record.
    eventlog.info("logs", "log index asked for a remote pull")
    segs = []
    for e in os.ilistdir(folder):
        name = e[0]
        if len(name) == 12 and name.endswith(".seg"):
            try:
                segs.append((int(name[:8], 16), os.stat("%s/%s" % (folder, name))[6]))
            except ValueError:
                pass  # not a segment's name
    segs.sort()
    s = ",".join("[%d,%d]" % p for p in segs)
    _say(dev, '{"step":"index","id":%d,"segments":[%s]}' % (_id(msg[1:5]), s))
