# One boot of a twin for the OTA integration tests (MicroPython): the bootloader picks the
# firmware slot, the vfs is mounted at / (the host stays reachable at /host), /boot.py from
# the flash picks the app slot, then each command in argv runs in turn:
#   install NAME [STOP]   begin + stream update file NAME (from where begin says) + finish
#   confirm | fail WHY    the self-test passed (ota_state.confirm) or failed (rollback)
#   status                installed counters/versions, slots, pending, last outcome
# Output: lines "BOOT ...", "RESULT {json}", "REFUSED reason", "STATUS {json}", "OPS n".
import json
import os
import sys

import esp32

fw_slot = esp32.Partition(esp32.Partition.RUNNING).info()[4]  # the bootloader runs here
host = os.VfsPosix("/")
fs = os.VfsLfs2(esp32.Partition("vfs"))
os.umount("/")
os.mount(fs, "/")
os.mount(host, "/host")
os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]  # as rom.py leaves it: the ROM folder is not on the path
with open("/boot.py") as f:
    exec(f.read(), {"__name__": "__main__"})

from firmware import ota, ota_state, slots  # noqa: E402

print("BOOT firmware=%s app=%s code=%s" % (fw_slot, slots.active(), ota.__file__))
TARGET = "esp32/warden"
args = sys.argv[1:]
while args:
    cmd = args.pop(0)
    if cmd == "install":
        name = "/host" + args.pop(0)
        stop = int(args.pop(0)) if args and args[0].isdigit() else None
        with open(name, "rb") as f:
            head = f.read(8)
            ml, sl = head[4] << 8 | head[5], head[6] << 8 | head[7]
            m, s = f.read(ml), f.read(sl)
            try:
                u = ota.Updater(TARGET)
                pos = u.begin(m, s)
                print("BEGIN %d" % pos)
                f.seek(8 + ml + sl + pos)
                buf = bytearray(1024)
                while stop is None or pos < stop:
                    n = f.readinto(buf)
                    if not n:
                        break
                    pos = u.write(pos, memoryview(buf)[:n])
                if stop is None:
                    print("RESULT " + json.dumps(u.finish()))
                else:
                    print("STOPPED %d" % pos)
            except ota.OTAError as e:
                print("REFUSED " + e.args[0])
    elif cmd == "confirm":
        print("RESULT " + json.dumps(ota_state.confirm()))
    elif cmd == "fail":
        print("RESULT " + json.dumps(ota_state.rollback(args.pop(0))))
    elif cmd == "status":
        st = ota_state.status()
        st["slots"] = slots.read()
        print("STATUS " + json.dumps(st))
print("OPS %d" % esp32.ops)
