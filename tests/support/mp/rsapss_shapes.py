# lib/rsapss.py refuses a modulus with a leading zero, one under 1024 bits and a digest that is
# not 32 bytes (tests/host/test_rsapss.py): one reason a line.
import rsapss

n = bytes([0xc5]) + bytes(383)
for args in ((bytes(1) + n[1:], bytes(384), bytes(32)), (n[:100], bytes(100), bytes(32)), (n, bytes(384), bytes(20))):
    try:
        rsapss.verify(*args)
        print('accepted')
    except ValueError as e:
        print(e)
