"""download.fetch without the network: `file://` URLs stand in for the web, a patched urlopen for outages."""

import hashlib
import urllib.error

import pytest

from gpt2lab.base import download
from gpt2lab.base.download import ChecksumError, DownloadError, fetch

DATA = b"line one\nline two\n" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "remote" / "data.jsonl"
    src.parent.mkdir()
    src.write_bytes(DATA)
    return src.as_uri()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))  # gpt2lab.base.atomic temporaries


def test_fetch_downloads_once_then_uses_the_cache(tmp_path, source, monkeypatch, no_network):
    dest = tmp_path / "cache" / "sub" / "data.jsonl"
    assert fetch(source, SHA, dest, progress=False) == dest
    assert dest.read_bytes() == DATA

    def no_second_download(*args, **kwargs):
        raise AssertionError("downloaded again although the file is cached")

    monkeypatch.setattr(download.urllib.request, "urlopen", no_second_download)
    assert fetch(source, SHA, dest, progress=False) == dest
    assert leftovers(dest.parent) == []


def test_wrong_checksum_saves_nothing_and_names_both_hashes(tmp_path, source):
    dest = tmp_path / "cache" / "data.jsonl"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as e:
        fetch(source, wrong, dest, progress=False)
    msg = str(e.value)
    assert source in msg and SHA in msg and wrong in msg
    assert not dest.exists() and leftovers(dest.parent) == []


def test_cached_file_with_wrong_checksum_is_reported_not_replaced(tmp_path, source):
    dest = tmp_path / "data.jsonl"
    dest.write_bytes(b"something else\n")
    with pytest.raises(ChecksumError, match="delete it to download it again") as e:
        fetch(source, SHA, dest, progress=False)
    assert str(dest) in str(e.value) and SHA in str(e.value)
    assert dest.read_bytes() == b"something else\n"


def test_network_failure_is_a_clear_download_error(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    dest = tmp_path / "data.jsonl"
    with pytest.raises(DownloadError, match="could not download https://example.invalid/x: Temporary failure"):
        fetch("https://example.invalid/x", SHA, dest, progress=False)
    assert not dest.exists() and leftovers(tmp_path) == []


def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    class Broken:
        headers = {"Content-Length": "100"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: Broken())
    with pytest.raises(KeyboardInterrupt):
        fetch("https://example.invalid/x", SHA, tmp_path / "data.jsonl", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    assert download.cache_dir() == tmp_path
    monkeypatch.delenv("GPT2LAB_CACHE")
    assert download.cache_dir().parts[-2:] == (".cache", "gpt2lab")


def test_unreachable_says_why_and_none_when_a_connection_opens(monkeypatch):
    """Both sides on 127.0.0.1: no network involved."""
    import socket

    from gpt2lab.base.download import unreachable

    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert unreachable(f"http://127.0.0.1:{port}", timeout=2) is None
    reason = unreachable(f"http://127.0.0.1:{port}", timeout=2)  # closed now: refused at once
    assert reason.startswith(f"cannot reach 127.0.0.1:{port} (") and "refused" in reason.lower()
