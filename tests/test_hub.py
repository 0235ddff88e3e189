"""One answer to "can this process use the Hugging Face hub?" for every caller (pretrained weights, prepare)."""

import socket

import pytest

from gpt2lab.base import hub

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def fresh(monkeypatch):
    """A new process's view: no offline switch, no endpoint, no proxy, no probe outcome remembered."""
    for var in (*hub.OFFLINE_VARS, "HF_ENDPOINT", *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    hub.forget()
    yield
    hub.forget()


@pytest.mark.parametrize("var", hub.OFFLINE_VARS)
@pytest.mark.parametrize("value", ["1", "true", "ON", " yes "])
def test_each_offline_switch_is_honoured_without_touching_a_socket(fresh, no_network, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    assert hub.hub_status() == (False, f"{var}={value} asks for offline mode")
    assert hub.hub_unreachable() == f"{var}={value} asks for offline mode"


@pytest.mark.parametrize("value", ["0", "false", "", "off"])
def test_a_switch_set_to_no_is_not_offline(fresh, monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.offline_asked() is None


def test_the_probe_runs_once_per_process_but_the_switch_is_read_every_time(fresh, monkeypatch):
    calls = []

    def refuse(address, timeout=None):
        calls.append((address, timeout))
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    first = hub.hub_status()
    assert first[0] is False and "huggingface.co:443" in first[1] and "refused" in first[1]
    assert hub.hub_status() == first and len(calls) == 1
    assert calls[0] == (("huggingface.co", 443), hub.PROBE_TIMEOUT_S)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # set after the probe: still counts
    assert hub.hub_unreachable() == "HF_DATASETS_OFFLINE=1 asks for offline mode" and len(calls) == 1


def test_probe_against_a_local_endpoint(fresh, monkeypatch):
    """A listening socket on 127.0.0.1 stands in for the hub: reachable; once closed: not reachable."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert hub.hub_status() == (True, f"http://127.0.0.1:{port} reachable")
    assert hub.hub_unreachable() is None
    server.close()
    hub.forget()
    reachable, why = hub.hub_status()
    assert not reachable and f"127.0.0.1:{port}" in why and "refused" in why.lower()


def test_the_probe_goes_to_the_https_proxy_when_one_is_set(fresh, monkeypatch):
    """Behind a proxy the hub's clients connect to the proxy, so that is what the probe must reach."""
    calls = []
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: calls.append(address) or socket.socket())
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert hub.hub_status()[0] is True
    assert calls == [("proxy.example", 3128)]


def test_a_probe_that_cannot_even_open_a_socket_says_why(fresh, no_network):
    reachable, why = hub.hub_status()
    assert not reachable and "network access attempted in a test" in why


def test_a_hanging_probe_is_cut_off_after_about_the_timeout(fresh, monkeypatch):
    import threading
    import time

    release = threading.Event()
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: release.wait(10))
    t = time.monotonic()
    reachable, why = hub.hub_status(timeout=0.2)
    release.set()
    assert not reachable and "no answer" in why and time.monotonic() - t < 2
