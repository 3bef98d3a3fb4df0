# The twin's esp32.Partition over the flash file WARDEN_FLASH (tests/host/test_flashimage.py):
# prints the vfs partition's offset, block count and block size, the app partitions' labels and
# two files the host put in the vfs; then writes /new.txt for the host to read back.
import os

import esp32

P = esp32.Partition
vfs = P.find(P.TYPE_DATA, label='vfs')[0]
print(vfs.info()[2], vfs.ioctl(4, 0), vfs.ioctl(5, 0))
print(sorted(p.info()[4] for p in P.find(P.TYPE_APP)))
os.mount(os.VfsLfs2(vfs), '/flash')
print(open('/flash/hello.txt').read(), len(open('/flash/a/b/c.bin', 'rb').read()))
with open('/flash/new.txt', 'w') as f:
    f.write('from the twin')
