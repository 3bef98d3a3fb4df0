# Stand-in for the ESP32 port's `esp32` module (tests only): the chip's temperature and NVS
# with the port's semantics (a missing key raises OSError(-4354), get_blob fills a buffer
# and returns the length, nothing is stored without commit()).
raw_f = 122  # raw_temperature(): Fahrenheit on the original ESP32
_store = {}


def raw_temperature():
    return raw_f


class NVS:
    def __init__(self, namespace):
        self._ns = namespace
        self._pending = {}

    def set_blob(self, key, value):
        self._pending[key] = bytes(value)

    def set_i32(self, key, value):
        self._pending[key] = int(value)

    def get_i32(self, key):
        v = _store.get((self._ns, key))
        if not isinstance(v, int):
            raise OSError(-4354)
        return v

    def get_blob(self, key, buffer):
        v = _store.get((self._ns, key))
        if not isinstance(v, bytes):
            raise OSError(-4354)
        if len(v) > len(buffer):
            raise OSError(-4364)
        buffer[:len(v)] = v
        return len(v)

    def erase_key(self, key):
        if (self._ns, key) not in _store:
            raise OSError(-4354)
        self._pending[key] = None

    def commit(self):
        for k, v in self._pending.items():
            if v is None:
                _store.pop((self._ns, k), None)
            else:
                _store[(self._ns, k)] = v
        self._pending = {}
