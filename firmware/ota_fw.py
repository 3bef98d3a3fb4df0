# OTA payload sink for `firmware` updates: the ESP32 app image goes into the next OTA
# partition (esp32.Partition) as it arrives: each 4 KiB block is erased when the stream
# reaches it, then written at offsets (4-argument writeblocks), so no block buffer is
# held. The durable offset is saved every 64 KiB; set_boot() (which validates the whole
# image) is the swap. Loaded by firmware/ota.py while such an update runs.
import esp32

from micropython import const

from firmware.core import replace as put
from firmware.ota import POS, OTAError
from firmware.ota_state import rm

_BLOCK = const(4096)


class Sink:
    def __init__(self):
        self.part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
        self.slot = self.part.info()[4]
        self.pos = 0

    def capacity(self):
        return self.part.ioctl(4, 0) * _BLOCK

    def start(self):
        rm(POS)
        return 0

    def resume(self, h, size):
        try:
            with open(POS) as f:
                pos = int(f.read())
        except (OSError, ValueError):
            pos = 0
        pos = min(pos, size) // _BLOCK * _BLOCK
        buf = bytearray(256)
        for off in range(0, pos, 256):
            self.part.readblocks(0, buf, off)
            h.update(buf)
        self.pos = pos
        return pos

    def _header(self):
        """Refuse a broken image with its first bytes instead of after the whole download."""
        b = bytearray(24)
        self.part.readblocks(0, b)
        if b[0] != 0xE9:
            raise OTAError("broken ESP32 image: invalid magic byte 0x%02x" % b[0])
        if b[12] or b[13]:
            raise OTAError("broken ESP32 image: chip id %d is not an ESP32" % (b[12] | b[13] << 8))
        if b[1] > 16:
            raise OTAError("broken ESP32 image: %d segments (at most 16)" % b[1])

    def write(self, mv):
        i = 0
        while i < len(mv):
            blk, off = divmod(self.pos, _BLOCK)
            if off == 0:
                self.part.ioctl(6, blk)  # erase the block the stream has reached
                if blk and blk % 16 == 0:
                    put(POS, str(self.pos))  # everything before this block is durable
            k = min(_BLOCK - off, len(mv) - i)
            self.part.writeblocks(blk, mv[i:i + k], off)
            first = self.pos < 24
            self.pos += k
            i += k
            if first and self.pos >= 24:
                self._header()

    def close(self):
        if self.pos < 24:
            raise OTAError("broken ESP32 image: %d bytes, shorter than its header" % self.pos)

    def commit(self, f=None):
        try:
            self.part.set_boot()
        except OSError as e:
            raise OTAError("broken ESP32 image: set_boot refused it (%s)" % (e.args[-1],))
