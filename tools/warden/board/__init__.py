"""A device's code and flash, on a real ESP32 or its twin: compiling the device code (build),
the ESP32 image and flash formats (espimage, flashimage, nvsimage), flashing and deploying a
board (flash, deploy), the device twin (twin), the operator's live view (watch), `make run`
(demo) and the type check of the device code against the board's stubs (stubcheck)."""
