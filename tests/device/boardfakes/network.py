# Stand-in for the ESP32 port's `network` Wi-Fi (tests only): WLAN follows a script of
# outcomes, one per connect(): a STAT_* code the attempt ends in, or STAT_GOT_IP.
STA_IF = 0
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202

script = []
calls = []
_name = "esp32"


def hostname(name=None):
    global _name
    if name is None:
        return _name
    _name = name


class WLAN:
    def __init__(self, interface_id=STA_IF):
        self._status = STAT_IDLE
        self._active = False

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)

    def connect(self, ssid=None, password=None, *, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        calls.append(("connect", ssid, password))
        self._status = script.pop(0) if script else STAT_CONNECTING

    def disconnect(self):
        calls.append(("disconnect",))
        self._status = STAT_IDLE

    def isconnected(self):
        return self._status == STAT_GOT_IP

    def status(self, param=None):
        return self._status

    def ifconfig(self, config=None):
        return ("192.168.4.20", "255.255.255.0", "192.168.4.1", "192.168.4.1")
