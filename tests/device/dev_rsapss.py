# Device tests for lib/rsapss.py under micropython: a fixed RSA-3072 key and a PSS signature
# made by `cryptography` (tests/host/test_rsapss.py covers every defect against OpenSSL);
# here: the verdicts, the heap it needs and its speed on the twin.
import gc
import hashlib
import time
from binascii import unhexlify

import devtest
import rsapss

MSG = b'warden: a manifest the device checks'
N = unhexlify(
    "d1ab32e1a39de91d444a7cd7e9a73ae2130ba2a01d0c7663dd29623c0fa36da661a090e1fc6114c99d2e5cc4d16a5743"
    "b815497ba82c695ff22f7b4944af5f74b22958dc38d68f8b96697fcb65147d9269b23f3516e7cd003c825da694c4d818"
    "fa0f2d61fd6645c474448201bb7b0328fae15bcdb9d1ae33f71ed00469cbfaeaeb24f8f8a37bcd18c3dbaeef8446930b"
    "9d17ec10a932751ee3dc73bd680b86e0b1c16145c6993d1ec7cda48c1c62d7076270141f52fb505321a246ac1aed2047"
    "431fc358def884bdf8fe6b3ab5e8485c4787f03d49e7702d643a4b062036c8e6cf19c888ccd3ea936a02b4f59a75548e"
    "a2207f19b461043306054b5f8c8842566c2411d9aec9ea1c78db36e43ce42a8ec131e5c54d1bfe974a31fdd6147ea4b7"
    "52d158b8821e720ba4fb164d9dde34049b056c66d540b98363acac46b7322ac21afd7a357b989cebc019d2dae60510d5"
    "b4a56b190e87e1056a9d47f135181f6746ba5060e911ef757e326e347240572d8818963315e426c738511008e0d77051"
)
SIG = unhexlify(
    "07de11dcbcdfe5021afc0dcf6ada179240cdd0b84a12d39b4525096bed6db6cb78e95cfb3bee034b65992bccf9234805"
    "5695c35c39ceea40258c8e8e6d17dd429e5fe79a32b1e764167d661de7a89422890037e46d978786c264558a059f1751"
    "c19a846e37adae7ca23a215eed8fa5d51a4c4f69aaa844a14fa4be2a1db609afdc81ebd57959f89d64a218531d4ebd6a"
    "5740d92a1def637a221ec572f85a49f059558a5fceb10d70cc6a6489622456bfed2eaba5c2a4831b56fb77b8121d25e9"
    "433095e7aac4280685da3d14bd51bfe73601f99f2b7950523c7f89d3be8930414be619182dff454c677c424113f41251"
    "e911f5b188d1d952afa0fcf097c81fb106f3de74ff17f0312fbbdeb606872c725319eaed871f1f858f7a3241f957a977"
    "68c11733be357e7242b4c0ca5d6ebf1729a489dea497024c199ff37a0e4a354240a2f6085233c547d9735c1292e8247c"
    "73d641844a8d085e7311c776bbf8232b6a471dcb348b2c52180a24801a6adc4446e88e5e8e725b18d30fa0dd74eaa835"
)


def test_the_cryptography_signature_verifies():
    assert rsapss.verify(N, SIG, hashlib.sha256(MSG).digest()) is None


def test_any_changed_bit_is_refused():
    d = hashlib.sha256(MSG).digest()
    for i in (0, 1, 100, 383):
        bad = bytearray(SIG)
        bad[i] ^= 0x80
        e = devtest.raises(ValueError, rsapss.verify, N, bytes(bad), d)
        assert e.args[0].startswith("rsapss: "), e.args[0]
    e = devtest.raises(ValueError, rsapss.verify, N, SIG, hashlib.sha256(MSG + b".").digest())
    assert "hash does not match" in e.args[0]
    e = devtest.raises(ValueError, rsapss.verify, N, SIG, hashlib.sha256(MSG).digest(), 3)
    assert e.args[0].startswith("rsapss: ")  # another exponent: another key


def test_verify_needs_under_8_kb_of_heap():
    d = hashlib.sha256(MSG).digest()
    gc.collect()
    hold = bytearray(gc.mem_free() - 8 * 1024)  # leave 8 KB: in one piece, as after a collect
    rsapss.verify(N, SIG, d)
    del hold


def test_verify_is_fast_on_the_twin():
    d = hashlib.sha256(MSG).digest()
    times = []
    for _ in range(11):
        t = time.ticks_us()
        rsapss.verify(N, SIG, d)
        times.append(time.ticks_diff(time.ticks_us(), t))
    times.sort()
    print("rsapss verify median %d us" % times[5])
    assert times[5] < 10000, times  # docs/design.md, "Signed updates": ~2.4 ms here; 10 ms is the target
