import pytest
import torch

from gpt2lab.engine.model import GPT, GPTConfig
from gpt2lab.engine.tokenizer import encode
from gpt2lab.lessons.scoring import ending_breakdown, first_disagreement, forward_cost
from gpt2lab.run.hellaswag import Example, load_examples, render, sample_path, score

EXAMPLE = Example("The cat sat on the", ("mat.", "roof of the tall old house by the river.", "dog", "chair and slept."), 0)


def _model():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=64, vocab_size=50257, n_layer=1, n_head=2, n_embd=16)).eval()


def test_breakdown_agrees_with_score_and_with_a_hand_computed_log_prob():
    model = _model()
    b = ending_breakdown(model, EXAMPLE)
    sums, means = score(model, [EXAMPLE], batch_size=1)
    assert [e.total for e in b.endings] == pytest.approx((-sums[0]).tolist(), abs=1e-4)
    assert [e.mean for e in b.endings] == pytest.approx((-means[0]).tolist(), abs=1e-4)
    assert b.acc_pick == int(sums[0].argmin()) and b.acc_norm_pick == int(means[0].argmin())
    # by hand: ending 2 (" dog") is one token, predicted from the context's last position
    ctx, dog = encode("The cat sat on the"), encode(" dog")
    with torch.no_grad():
        logits = model(torch.tensor([ctx]))[0][0, -1]
    assert len(b.endings[2].logprobs) == len(dog) == 1
    assert b.endings[2].logprobs[0] == pytest.approx(logits.log_softmax(-1)[dog[0]].item(), abs=1e-5)
    assert "".join(b.endings[1].tokens) == " roof of the tall old house by the river."


def test_sum_favours_short_endings_mean_does_not():
    from gpt2lab.lessons.scoring import Breakdown, Ending

    short = Ending("a", ["a"], [-3.0])  # one unlikely token
    long = Ending("b c d e", ["b", "c", "d", "e"], [-1.0, -1.0, -1.0, -1.0])  # four likelier ones
    b = Breakdown([long, short, long, long], label=0)
    assert b.acc_pick == 1 and b.acc_norm_pick == 0


def test_first_disagreement():
    sums = torch.tensor([[1.0, 2, 3, 4], [5.0, 1, 6, 7], [1.0, 2, 3, 4]])
    means = torch.tensor([[1.0, 2, 3, 4], [0.5, 1, 6, 7], [0.1, 2, 3, 4]])
    assert first_disagreement(sums, means) == 1
    assert first_disagreement(sums, sums) is None


def test_forward_cost_counts_the_rows_score_runs():
    torch.manual_seed(0)
    net = GPT(GPTConfig(block_size=128, vocab_size=50257, n_layer=1, n_head=2, n_embd=16)).eval()
    subset = load_examples(sample_path(), limit=6)
    cost = forward_cost(net, subset, batch_size=4)
    rendered = [render(ex) for ex in subset]
    assert cost.scored == sum(int(m[:, 1:].sum()) for _, m, _ in rendered)  # ending tokens after the first position
    assert cost.tokens >= sum(t.numel() for t, _, _ in rendered)  # padding only adds
    assert cost.head_flops == 2 * 50257 * 16 * cost.scored
    assert cost.body_s > 0 and cost.head_s > 0
