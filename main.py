# Starts the Warden application. A failure that escapes it is printed and the
# board drops to the REPL (the twin exits with an error): never a reboot loop.
import firmware.app

firmware.app.main()
