"""Head + loss alone: the chunked loss holds less memory than the full logits."""

from gpt2lab.engine.losses import chunked_cross_entropy, full_cross_entropy
from gpt2lab.lessons.head_memory import head_and_loss


def test_chunked_head_and_loss_needs_less_memory_than_full_logits():
    rows, width = 1024, 32  # full logits: 1024 x 50304 fp32 = 196 MiB, with their gradient at least twice that
    full_mb, full_ms = head_and_loss(full_cross_entropy, rows, width, "cpu", steps=1)
    chunk_mb, chunk_ms = head_and_loss(chunked_cross_entropy, rows, width, "cpu", steps=1)
    assert full_ms > 0 and chunk_ms > 0
    if full_mb is not None:  # a per-step probe exists on this OS
        assert full_mb >= rows * 50304 * 4 / 2**20  # at least the logits themselves
        assert chunk_mb < full_mb / 2
    mb, ms = head_and_loss(chunked_cross_entropy, 64, width, "cpu", variant="recompute", steps=1)
    assert ms > 0
