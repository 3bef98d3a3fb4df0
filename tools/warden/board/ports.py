"""Which serial port a board is on: `--port auto`, found the way `mpremote devs` finds them.

It only lists and chooses ports: it must not open one (esptool and mpremote do that).

A board shows up as a USB serial port: pyserial's `serial.tools.list_ports` reports a USB
vendor and product id (VID:PID) for it, and none for the UARTs a PC has built in (/dev/ttyS0..),
which are never a board. `auto` is what a user means when exactly one board is plugged in; with
none, or with several, guessing could erase the wrong board, so it is a clear error that lists
what was found. `comports()` is the one place that asks the operating system: the tests replace
it, since the machine running them has no board.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import WardenError

AUTO = "auto"


class PortError(WardenError):
    hint = "plug in the board (a data cable, not a charge-only one), or pass --port DEVICE"


@dataclass(frozen=True)
class Port:
    device: str          # what esptool and mpremote open: /dev/ttyUSB0, /dev/cu.usbserial-1420, COM3
    description: str
    vid: int | None
    pid: int | None

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else "-"

    def __str__(self):
        return f"{self.device} ({self.description or 'no description'}, {self.usb_id})"


def comports() -> list:
    """Every serial port the operating system has, as Port (pyserial, installed with esptool)."""
    from serial.tools import list_ports

    return [Port(p.device, p.description or "", p.vid, p.pid) for p in list_ports.comports()]


def boards() -> list:
    """The serial ports that can be a board: USB ones (those with a VID:PID), sorted by device."""
    return sorted((p for p in comports() if p.vid is not None and p.pid is not None), key=lambda p: p.device)


def resolve(port: str | None) -> str:
    """The port to use for `port`: itself, or for `auto` (or nothing) the one board attached."""
    if port and port != AUTO:
        return port
    found = boards()
    if len(found) == 1:
        return found[0].device
    if not found:
        raise PortError("no board found: no USB serial port is attached")
    listed = "\n  ".join(str(p) for p in found)
    raise PortError(f"{len(found)} USB serial ports are attached, so --port auto cannot choose:\n  {listed}",
                    hint="pass --port with one of them (e.g. --port " + found[0].device + ")")
