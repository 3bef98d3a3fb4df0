# The twin's esp32.Partition and esp32.NVS: the API of twin/esp32.py, which loads this
# module when one of these names is first looked up (see there).
import esp32


class Partition(esp32._Dev):
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        if block_size != 4096:
            raise ValueError("block_size must be 4096 on this flash")
        if id == Partition.RUNNING:
            id = esp32._running or esp32._ota("boot")  # no ROM ran: this process boots now
        elif id == Partition.BOOT:
            id = esp32._ota("boot_label")
        esp32._Dev.__init__(self, esp32._find(id))

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        out = []
        for info in esp32._table():
            if info[0] == type and (subtype == 0xFF or info[1] == subtype) and (label is None or info[4] == label):
                out.append(cls(info[4], block_size))
        return out

    # -- OTA: ESP-IDF's esp_ota_ops rules, in twin/bootloader.py -----------------------
    def get_next_update(self):
        return esp32._ota("next_update", self)

    def set_boot(self):
        esp32._ota("set_boot", self)  # OSError(-5379) if the image does not validate

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        esp32._ota("mark_valid")  # OSError(1) while otadata is blank ("running firmware is factory")


def NVS(namespace):
    """esp32.NVS(namespace): the twin's stand-in, twin/nvs.py (C on a board: whoever uses it
    drops the module again, as hal.log_key() does)."""
    return esp32._rom("nvs").NVS(namespace)
