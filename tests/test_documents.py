import numpy as np
import pytest

from gpt2lab.engine.data import ShardLoader, read_manifest
from gpt2lab.engine.model import GPTConfig
from gpt2lab.engine.tokenizer import EOT_ID, encode
from gpt2lab.lessons.documents import EpochRun, epoch_correlation, speeches, train_epochs, write_documents

TEXT = "First Citizen:\nBefore we proceed.\n\nAll:\nSpeak, speak.\n\n\nFirst Citizen:\nYou are all resolved?\n"
DOCS = [f"Speaker {i}:\n" + " ".join(["word"] * (5 + i % 7)) + f" number {i}." for i in range(40)]


def test_speeches_are_the_blocks_between_blank_lines():
    assert speeches(TEXT) == ["First Citizen:\nBefore we proceed.", "All:\nSpeak, speak.",
                              "First Citizen:\nYou are all resolved?"]


def test_write_documents_makes_shards_the_loader_reads(tmp_path):
    folder = write_documents(DOCS, tmp_path / "d", val_documents=2)
    manifest = read_manifest(folder)
    assert [e["split"] for e in manifest["shards"]] == ["val", "train"]
    train = np.fromfile(folder / manifest["shards"][1]["file"], dtype=np.uint16)
    assert (train == EOT_ID).sum() == 38 and train[0] == EOT_ID
    assert train[1 : 1 + len(encode(DOCS[2]))].tolist() == encode(DOCS[2])
    x, y = ShardLoader(folder, "train", 2, 8, permute=False).next_batch()
    assert x[0].tolist() == train[:8].tolist()


def test_without_permutation_every_epoch_repeats_exactly(tmp_path):
    folder = write_documents(DOCS, tmp_path / "d")
    cfg = GPTConfig(block_size=8, vocab_size=32, n_layer=1, n_head=1, n_embd=8)
    # lr 0: the model never changes, so each step's loss depends on its batch only
    same = train_epochs(folder, cfg, 2, 8, epochs=3, permute=False, lr=0.0)
    shuffled = train_epochs(folder, cfg, 2, 8, epochs=3, permute=True, lr=0.0)
    e = same.epochs()
    assert e.shape == (3, same.steps_per_epoch) and np.array_equal(e[0], e[1]) and np.array_equal(e[1], e[2])
    assert epoch_correlation(same, skip=0) == pytest.approx(1.0)
    assert not np.array_equal(shuffled.epochs()[1], shuffled.epochs()[2])
    assert epoch_correlation(shuffled, skip=0) < 0.9


def test_epoch_correlation_removes_the_trend():
    rng = np.random.default_rng(0)
    steps = 50
    pattern = rng.normal(size=steps)
    trend = -np.arange(4 * steps) * 0.1  # a falling loss correlates with itself without any repetition
    repeated = EpochRun(False, steps, list(np.tile(pattern, 4) + trend))
    fresh = EpochRun(True, steps, list(rng.normal(size=4 * steps) + trend))
    assert epoch_correlation(repeated) == pytest.approx(1.0)
    assert abs(epoch_correlation(fresh)) < 0.35
    with pytest.raises(ValueError):
        epoch_correlation(EpochRun(False, steps, list(pattern)))
