"""warden.broker.channel, the command channel `ota`, `device config` and `logs pull --via mqtt` share:
with no address given it reaches the broker `warden broker run` runs from the state, on the port it
listens on (not project.json's), and a refused subscription is an error at once, in each tool's own
error class.
"""
import pytest

from warden.broker.channel import CommandChannel
from warden.broker.server import Broker, free_port
from warden.fleet import devconfig, pki
from warden.logs import remote
from warden.ota import push
from warden.state import State


@pytest.fixture(scope="module")
def own_state(tmp_path_factory):
    # its own state: a broker in the state's own run folder is seen by every client of that state
    state = State(tmp_path_factory.mktemp("channel") / ".warden")
    pki.init_pki(state)
    return state


def test_without_an_address_the_running_broker_is_used_on_its_port(own_state):
    port = free_port()
    assert port != own_state.broker_port
    with Broker(own_state, port=port):
        ch = CommandChannel(own_state, "twin-001", "ota")
        assert (ch.host, ch.port) == (own_state.broker_host, port)
        ch.connect(timeout=10)     # CONNACK and a granted SUBACK on cmd/dt .../ota
        try:
            ch.send(b"S")          # nobody answers: no device
            assert ch.answer({"status"}, 0.3) is None
        finally:
            ch.close()
        assert push.Technician(own_state, "twin-001", port=1).port == 1    # a given port wins
    ch = CommandChannel(own_state, "twin-001", "ota")
    assert (ch.host, ch.port) == (own_state.broker_host, own_state.broker_port)   # none runs: project.json's


@pytest.mark.parametrize("make, error", [
    (lambda s: push.Technician(s, "twin-001", port=1), push.OtaPushError),
    (lambda s: devconfig.Link(s, "twin-001", port=1), devconfig.DevConfigError),
    (lambda s: remote._Link(s, "twin-001", "technician.default", "localhost", 1), remote.RemoteLogError),
])
def test_a_refused_subscription_is_an_error_in_each_tools_class(own_state, make, error):
    ch = make(own_state)
    ch._up.put(0)          # CONNACK accepted
    ch._up.put([128])      # SUBACK: failure (MQTT 3.1.1)
    with pytest.raises(error, match="refused technician.default a subscription to dt/") as e:
        ch._handshake("localhost:1", 1)
    assert "dt/<app>/+/" in e.value.hint
    ch._up.put(0)
    ch._up.put([1])        # granted at QoS 1: no error
    ch._handshake("localhost:1", 1)
