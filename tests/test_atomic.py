import pytest

from gpt2lab.base import atomic


def test_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic.write_text(path, "one")
    atomic.write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="No space left"):
        with atomic.atomic_write(path) as f:
            f.write(b"half of the new")
            raise OSError(28, "No space left on device")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_temporary_names_are_unique_and_hidden(tmp_path):
    names = {atomic.temporary_name(tmp_path / "latest").name for _ in range(100)}
    assert len(names) == 100 and all(n.startswith(".latest.") and n.endswith(".tmp") for n in names)
