# An I2C sensor driver in the shape firmware/hal/esp32.py loads (tests only):
# make(i2c, spec) returns f(seq) -> number.
def make(i2c, spec):
    addr = spec.get("addr", 0x44)
    return lambda seq: i2c.readfrom_mem(addr, spec.get("reg", 1), 1)[0] * spec.get("scale", 1.0)
