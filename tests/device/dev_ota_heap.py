# The OTA engine's heap: a whole firmware and app update (import, signature check, streaming,
# set_boot / unpack) must run with only OTA_BUDGET bytes of the 64 KB heap free, the rest
# held in blocks of all sizes as a running app holds it.
# devtest: needs=ota_vectors
import gc

import otadev

otadev.boot_flash()
import bootloader  # noqa: E402,F401  the twin's set_boot emulation: C in a board's ROM, not app heap
from firmware import core  # noqa: E402  resident on the device: not the update's heap
# Measured: begin() peaks during the RSA-3072 check (firmware/ota.py, rsapss and pow()'s
# 770-byte temporaries in a fragmented heap); streaming needs far less (bench/ota_bench.py).
# 28 KiB sat at the edge: the test's temporary paths (qstrs, never freed) grow with pytest's
# run counter, and the app update failed once they were a few characters longer.
OTA_BUDGET = 29 * 1024


def squeeze(budget):
    """Leave only about `budget` bytes of heap free, as an app that already uses the rest."""
    hold = []
    size = 16384
    while size >= 128:
        gc.collect()
        if gc.mem_free() - size < budget:
            size //= 2
            continue
        try:
            hold.append(bytearray(size))
        except MemoryError:
            size //= 2
    return hold


def run(name, kind):
    gc.collect()
    base = gc.mem_alloc()
    filler = squeeze(OTA_BUDGET)
    from firmware import ota
    u = ota.Updater(otadev.TARGET)
    p = otadev.install(u, name, kind)
    del u, ota, filler
    core.unload(("firmware.ota", "firmware.ota_state", "firmware.ota_check", "firmware.ota_fw", "firmware.ota_app",
                 "firmware.slots", "rsapss"))   # (otacmd.TRANSFER: importing it here would count it)
    print("%s update: %d bytes left allocated after unloading" % (kind, gc.mem_alloc() - base))
    return p


def test_firmware_update_fits_the_budget():
    assert run("firmware", "firmware")["slot"] == "ota_1"


def test_app_update_fits_the_budget():
    assert run("app", "app")["slot"] == "a"
