# lib/rsapss.py against a file of test vectors (tests/host/test_rsapss.py), one per line:
# name,modulus,signature,digest (hex). Read as a stream, so the run stays inside the device's
# 64 KB heap. Prints "<name> OK" or "<name> REFUSED <reason>" for each.
import gc
import sys
from binascii import unhexlify

import rsapss

with open(sys.argv[1]) as f:
    for line in f:
        name, n, sig, digest = line.split(',')
        try:
            rsapss.verify(unhexlify(n), unhexlify(sig), unhexlify(digest.strip()))
            print(name, 'OK')
        except ValueError as e:
            print(name, 'REFUSED', e)
        gc.collect()
