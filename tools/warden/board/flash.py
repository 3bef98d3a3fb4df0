"""Put MicroPython on an ESP32 with esptool, after checking the image offline.

It must not touch a board before the image passed the offline check, nor erase one unless
the caller asked for it (the CLI asks first).

Two kinds of `.bin` come out of a MicroPython build (and the downloads page):

- the combined **firmware.bin** (`ESP32_GENERIC-OTA-<date>-v1.xx.bin` on the downloads page,
  `build-ESP32_GENERIC-OTA/firmware.bin` from `make`): bootloader + partition table + app, to be
  written at the bootloader offset (0x1000 on the ESP32 and ESP32-S2, 0x0 on the S3, C3, C6).
  This is what an unflashed board needs.
- the app-only **micropython.bin** (`build-.../micropython.bin`, the `.app-bin` download): the
  app image alone. It goes into an OTA slot: `warden flash` writes it to ota_0 (0x10000) of a
  board that already has the OTA variant's bootloader and partition table, and it is the payload
  of a `firmware` OTA (`warden sign --kind firmware`), which the device streams into its inactive
  slot.

`inspect_image` checks a file with `esptool image-info` (run here, offline) and its own reading
of the partition table: chip, a valid app image, the OTA variant's layout (two 1.5 MiB slots),
an app that fits one slot. Anything else is refused with FlashError before a board is touched.
`flash_plan` builds the esptool command lines (tests assert on them); `flash` runs them.
"""
from __future__ import annotations

import re
import shlex
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WardenError
from . import flashimage

# Where the second-stage bootloader lives in flash, by chip (esptool --chip names).
BOOTLOADER_OFFSET = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0, "esp32c6": 0x0}
# esp_image_header_t chip_id values.
CHIP_IDS = {0: "esp32", 2: "esp32s2", 5: "esp32c3", 9: "esp32s3", 13: "esp32c6"}
IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
PART_MAGIC = 0x50AA
SLOT = flashimage.part("ota_0")
OTADATA = flashimage.part("otadata")
SLOT_SIZE = SLOT.size             # 1.5 MiB
FLASH_SIZE = flashimage.FLASH_SIZE
DEFAULT_BAUD = 460800


class FlashError(WardenError):
    pass


@dataclass
class ImageInfo:
    """What a firmware file is, as checked: `kind` is "combined" or "app"."""
    path: Path
    kind: str
    chip: str
    size: int                 # the file
    app_size: int             # the app image (for "combined": the part written to ota_0)
    version: str = ""
    project: str = ""
    partitions: list = field(default_factory=list)   # (label, type, subtype, offset, size) for "combined"

    @property
    def offset(self):
        """Where in flash the file is written."""
        return BOOTLOADER_OFFSET[self.chip] if self.kind == "combined" else SLOT.offset


def esptool_argv(*args) -> list:
    """argv running the venv's esptool (v5: hyphenated commands)."""
    return [sys.executable, "-m", "esptool", *map(str, args)]


def command_line(argv) -> str:
    """`argv` as one shell line a user can paste (what warden runs, so it names the same esptool)."""
    return shlex.join(str(a) for a in argv)


def image_info_argv(path) -> list:
    return esptool_argv("image-info", path)


def run_image_info(path) -> str:
    """esptool image-info's report on `path`; FlashError with esptool's reason if it refuses it."""
    r = subprocess.run(image_info_argv(path), capture_output=True, text=True, timeout=120)
    out = (r.stdout or "") + (r.stderr or "")
    if r.returncode != 0:
        why = re.search(r"(?:ERROR|error)[^:]*:\s*(.+)", out)
        raise FlashError(f"{path} is not a valid ESP32 image: {why.group(1).strip() if why else out.strip()[-300:]}",
                         hint="use a MicroPython firmware .bin for the ESP32 (OTA variant)")
    return out


def parse_image_info(text: str) -> dict:
    """The facts we check from an image-info report: chip, checksum/hash validity, app description."""
    info = {}
    m = re.search(r"Chip ID:\s*(\d+)", text)
    if m:
        info["chip_id"] = int(m.group(1))
    m = re.search(r"Checksum:\s*\S+\s*\((\w+)\)", text)
    if m:
        info["checksum"] = m.group(1)
    m = re.search(r"Validation hash:\s*\S+\s*\((\w+)\)", text)
    if m:
        info["hash"] = m.group(1)
    info["app"] = "Application Information" in text
    m = re.search(r"App version:\s*(.*)", text)
    if m:
        info["version"] = m.group(1).strip()
    m = re.search(r"Project name:\s*(.*)", text)
    if m:
        info["project"] = m.group(1).strip()
    return info


def parse_partition_table(raw: bytes) -> list:
    """(label, type, subtype, offset, size) of each entry of an ESP-IDF binary partition table."""
    out = []
    for i in range(0, len(raw) - 31, 32):
        magic, ptype, sub, off, size, label, _flags = struct.unpack_from("<HBBII16sI", raw, i)
        if magic != PART_MAGIC:
            break
        out.append((label.rstrip(b"\0").decode(errors="replace"), ptype, sub, off, size))
    return out


def _check_app(data: bytes, what: str, chip: str, tmpdir: Path) -> dict:
    if len(data) < 24 or data[0] != IMAGE_MAGIC:
        raise FlashError(f"{what} does not start with an ESP32 image header (magic 0xE9)",
                         hint="use a MicroPython firmware .bin")
    p = tmpdir / "app.bin"
    p.write_bytes(data)
    facts = parse_image_info(run_image_info(p))
    _check_facts(facts, what, chip)
    if not facts["app"]:
        raise FlashError(f"{what} is not an application image (no app description): a bootloader?",
                         hint="use MicroPython's firmware.bin (combined) or micropython.bin (app only)")
    return facts


def _check_facts(facts, what, chip):
    found = CHIP_IDS.get(facts.get("chip_id"), f"chip id {facts.get('chip_id')}")
    if found != chip:
        raise FlashError(f"{what} is built for {found}, not {chip}",
                         hint=f"download the MicroPython build for your chip, or pass --chip {found}"
                         if found in BOOTLOADER_OFFSET else "download the MicroPython build for your chip")
    for k in ("checksum", "hash"):
        if facts.get(k) not in (None, "valid"):
            raise FlashError(f"{what} is damaged: its {k} is {facts[k]}", hint="download or build it again")


def _check_layout(parts, what):
    """The table must be the OTA variant's: ota_0 and ota_1 where Warden's OTA expects them."""
    by_label = {p[0]: p for p in parts}
    for want in (flashimage.part("ota_0"), flashimage.part("ota_1"), flashimage.part("nvs")):
        got = by_label.get(want.label)
        if got is None or got[3] != want.offset or got[4] != want.size:
            labels = ", ".join(f"{p[0]}@0x{p[3]:x}" for p in parts) or "none"
            raise FlashError(
                f"{what} has not the OTA partition layout (needs {want.label} of 0x{want.size:x} bytes at "
                f"0x{want.offset:x}; found: {labels})",
                hint="use the OTA variant: ESP32_GENERIC-OTA-*.bin, or make BOARD=ESP32_GENERIC BOARD_VARIANT=OTA")


def inspect_image(path, chip: str = "esp32") -> ImageInfo:
    """Check a firmware file offline (esptool image-info + layout + size); FlashError if unfit."""
    path = Path(path)
    if chip not in BOOTLOADER_OFFSET:
        raise FlashError(f"unsupported chip {chip!r}", hint="one of: " + ", ".join(BOOTLOADER_OFFSET))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FlashError(f"cannot read {path}: {e.strerror or e}")
    if not data or data[0] != IMAGE_MAGIC:
        raise FlashError(f"{path} is not an ESP32 firmware image (first byte "
                         f"{'none' if not data else hex(data[0])}, expected 0xe9)",
                         hint="pass MicroPython's firmware.bin or micropython.bin, not a .uf2/.elf/.hex")
    boff = BOOTLOADER_OFFSET[chip]
    table_at = flashimage.TABLE_OFFSET - boff
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        is_combined = len(data) > table_at + 32 and struct.unpack_from("<H", data, table_at)[0] == PART_MAGIC
        if not is_combined:
            if len(data) > SLOT_SIZE:
                raise FlashError(f"{path} is {len(data)} bytes: larger than the 1.5 MiB ({SLOT_SIZE}-byte) app slot",
                                 hint="an app image must fit one OTA slot; trim the build (fewer frozen modules)")
            facts = _check_app(data, str(path), chip, td)
            return ImageInfo(path, "app", chip, len(data), len(data), facts.get("version", ""),
                             facts.get("project", ""))
        # Combined: the bootloader at 0, the table at table_at, the app at the ota_0 offset.
        _check_facts(parse_image_info(run_image_info(path)), f"{path} (bootloader)", chip)
        parts = parse_partition_table(data[table_at:table_at + flashimage.TABLE_MAX])
        _check_layout(parts, str(path))
        app_at = SLOT.offset - boff
        app = data[app_at:]
        if boff + len(data) > FLASH_SIZE:
            raise FlashError(f"{path} is {len(data)} bytes: it does not fit a 4 MiB flash at 0x{boff:x}")
        if len(app) > SLOT_SIZE:
            raise FlashError(f"the app in {path} is {len(app)} bytes: larger than the 1.5 MiB ({SLOT_SIZE}-byte) "
                             "OTA slot", hint="trim the build (fewer frozen modules)")
        facts = _check_app(app, f"the app in {path}", chip, td)
        return ImageInfo(path, "combined", chip, len(data), len(app), facts.get("version", ""),
                         facts.get("project", ""), parts)


@dataclass
class Step:
    what: str
    argv: list


def flash_plan(port: str, info: ImageInfo, erase: bool = True, baud: int = DEFAULT_BAUD) -> list:
    """The esptool steps that put `info` on the board at `port` (nothing runs here).

    combined: erase the whole flash (default; the filesystem, identity and logs go too) or,
    with erase=False, only otadata, so the bootloader starts the new ota_0 and not a slot an
    earlier OTA selected; then write the file at the bootloader offset.
    app: erase otadata and write the image to ota_0 (the board must already run the OTA
    variant); erasing everything would leave it without a bootloader, so erase=True is refused.
    """
    if not port:
        raise FlashError("no serial port given", hint="pass --port, e.g. /dev/ttyUSB0 (Linux) or /dev/cu.usbserial-* "
                                                      "(macOS), or --port auto with one board attached")
    base = ("--chip", info.chip, "--port", port, "--baud", baud)
    steps = []
    if info.kind == "app" and erase:
        raise FlashError(f"{info.path} is an app-only image: erasing the whole flash would leave no bootloader",
                         hint="flash the combined firmware.bin first, or pass --no-erase to update ota_0 only")
    if erase:
        steps.append(Step("erase the whole flash", esptool_argv(*base, "erase-flash")))
    else:
        steps.append(Step("erase otadata (boot ota_0 next)",
                          esptool_argv(*base, "erase-region", f"0x{OTADATA.offset:x}", f"0x{OTADATA.size:x}")))
    steps.append(Step(f"write {info.path.name} at 0x{info.offset:x}",
                      esptool_argv(*base, "write-flash", f"0x{info.offset:x}", info.path)))
    return steps


def run_steps(steps, runner=None, say=None):
    """Run esptool steps in order; FlashError naming the step that failed."""
    runner = runner or (lambda argv: subprocess.run(argv))
    for s in steps:
        if say:   # the whole command, so that a user can run it again by hand
            say(f"{s.what}: {command_line(s.argv)}")
        r = runner(s.argv)
        if r.returncode != 0:
            raise FlashError(f"esptool failed to {s.what} (exit {r.returncode})",
                             hint="check the port and cable; hold BOOT while pressing EN/RST to enter the "
                                  "bootloader; try a lower --baud (115200)")


def flash(port: str, firmware, chip: str = "esp32", erase: bool = True, baud: int = DEFAULT_BAUD,
          runner=None, say=None) -> ImageInfo:
    """Check `firmware`, then erase and write it to the board at `port`."""
    info = inspect_image(firmware, chip)
    run_steps(flash_plan(port, info, erase, baud), runner, say)
    return info
