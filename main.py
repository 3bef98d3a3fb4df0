# Starts the Warden application.
#
# A failure that escapes it is printed. If an update is on trial, it is rolled
# back and the device resets into the previous image (the automatic rollback a
# crashing update needs: firmware/ota_state.py records why, and the device
# reports it after the reset); otherwise the board drops to the REPL (the twin
# exits with an error). Never a reboot loop: an update is rolled back once.
try:
    import firmware.app

    firmware.app.main()
except Exception as e:
    import sys

    sys.print_exception(e)
    try:
        from firmware import ota_state

        p = ota_state.rollback("crashed on trial: %s: %s" % (type(e).__name__, e))
    except Exception:
        p = None
    if p:
        from firmware import hal

        hal.reset()
    raise
