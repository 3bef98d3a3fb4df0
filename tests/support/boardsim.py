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
import tty

from warden.board import twin as twinlib

from .process import Process

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


class BoardSim(Process):
    """A Process on a pseudo-terminal: its boot output (up to the first REPL prompt) is in
    `lines`; after that its pty and `port` are joined byte for byte."""

    name = "board"

    def __init__(self, flash, heap="128k"):
        super().__init__()
        self.flash = flash
        self.heap = heap
        self.resets = 0
        self.commands = []
        self.port = None     # the serial line mpremote talks to, once started
        self._fds = ()

    def command(self):
        _argv, env = twinlib.twin_command(self.flash, self.heap)
        return [twinlib.micropython_binary(), "-X", "heapsize=" + self.heap, "-i", "-c", BOOT], env

    def _popen(self):
        ma, sa = pty.openpty()
        mb, sb = pty.openpty()
        tty.setraw(sa)
        tty.setraw(sb)
        argv, env = self.command()
        proc = subprocess.Popen(argv, stdin=sa, stdout=sa, stderr=sa, env=env, close_fds=True)
        os.close(sa)
        self._fds = (ma, mb, sb)
        self.port = os.ttyname(sb)
        return proc

    def start(self):
        super().start()
        self.wait_for("board up", 10)
        return self

    def _pump(self):
        proc = self.proc
        ma, mb, _ = self._fds
        boot = b""   # the boot banner stays off the serial line, in `lines`
        up = False
        try:
            while not self._stopping:
                r, _, _ = select.select([ma, mb], [], [], 0.1)
                for fd in r:
                    data = os.read(fd, 4096)
                    if fd == ma and not up:
                        boot += data
                        self.out.feed(data.decode("utf-8", "replace"))
                        up = b">>> " in boot
                        continue
                    os.write(mb if fd == ma else ma, data)
        except OSError:   # the board's side closed: it is gone
            pass
        proc.drained.set()
        self.out.close()

    def stop(self):
        if self.proc is None:
            return
        self.kill()
        self._reader.join(5)
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
