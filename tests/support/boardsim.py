"""A stand-in serial board for mpremote: the real MicroPython unix port on a pseudo-terminal.

The process mounts the vfs of a twin flash file at `/` (formatting a blank one, as the ESP32
port does on its first boot) and sits at the REPL, which speaks MicroPython's raw REPL just
like a board's UART. mpremote connects to a second pty; a thread copies bytes between the two.
`runner` runs command lines as `warden.board.deploy` would, except that an mpremote `reset` (the unix
port has no `machine.reset`) restarts the process on the same flash: a reboot.
"""
import os
import pty
import select
import subprocess
import threading
import time
import tty

from warden.board import twin as twinlib

BOOT = """import os, esp32
_b = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]
try:
    _fs = os.VfsLfs2(_b)
except OSError:
    os.VfsLfs2.mkfs(_b)
    _fs = os.VfsLfs2(_b)
os.umount("/")
os.mount(_fs, "/")
os.chdir("/")
print("board up")
"""


class BoardSim:
    def __init__(self, flash, heap="128k"):
        self.flash = flash
        self.heap = heap
        self.proc = None
        self.resets = 0
        self.commands = []

    def start(self):
        ma, sa = pty.openpty()
        mb, sb = pty.openpty()
        tty.setraw(sa)
        tty.setraw(sb)
        _argv, env = twinlib.twin_command(self.flash, self.heap)
        argv = [twinlib.micropython_binary(), "-X", "heapsize=" + self.heap, "-i", "-c", BOOT]
        self.proc = subprocess.Popen(argv, stdin=sa, stdout=sa, stderr=sa, env=env, close_fds=True)
        os.close(sa)
        self._fds = (ma, mb, sb)
        self._stop = False
        self.port = os.ttyname(sb)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while b"board up" not in self._seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert b"board up" in self._seen, self._seen
        return self

    _seen = b""

    def _pump(self):
        ma, mb, _ = self._fds
        self._seen = b""
        up = False
        while not self._stop:
            r, _, _ = select.select([ma, mb], [], [], 0.1)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return
                if fd == ma and not up:
                    self._seen += data   # the boot banner stays off the serial line
                    up = b">>> " in self._seen
                    continue
                os.write(mb if fd == ma else ma, data)

    def stop(self):
        if self.proc is None:
            return
        self._stop = True
        self.proc.kill()
        self.proc.wait()
        self._thread.join(5)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc = None

    def runner(self, argv):
        """Run one deploy command line against this board; an mpremote `reset` reboots it."""
        self.commands.append(list(argv))
        argv = [self.port if a == "PORT" else a for a in argv]
        reset = "reset" in argv
        if reset:
            argv = argv[:argv.index("reset")]
            if argv[-1] == "+":
                argv = argv[:-1]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if reset and r.returncode == 0:
            self.stop()
            self.resets += 1
            self.start()
        return r
