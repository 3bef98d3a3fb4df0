# The twin's esp32.Partition refuses an unknown label and a block outside the partition, and
# writes at a block offset (tests/host/test_flashimage.py). One result per line.
import esp32

try:
    esp32.Partition('nope')
except ValueError as e:
    print('label', e)
p = esp32.Partition('nvs')
buf = bytearray(16)
try:
    p.readblocks(4, buf)
except OSError as e:
    print('range', e.errno)
p.writeblocks(0, b'abc')
p.readblocks(0, buf)
print(bytes(buf[:4]))
p.writeblocks(0, b'Z', 1)
p.readblocks(0, buf)
print(bytes(buf[:4]))
