import pytest
import torch

from gpt2lab.measure.memory import STATE_BYTES_PER_PARAM, saved_activation_bytes, training_memory
from gpt2lab.engine.model import GPT, GPTConfig

CFG = GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=32)


def test_a_linear_layer_keeps_its_input_not_its_weight():
    layer = torch.nn.Linear(8, 3)
    x = torch.randn(4, 8)
    assert saved_activation_bytes(layer, x) == 4 * 8 * 4  # the (4, 8) fp32 input, for the weight gradient


def test_gelu_keeps_its_input_and_the_next_linear_its_output():
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 2))
    x = torch.randn(5, 8)
    # input of layer 1 (5x8), input of GELU (5x16), input of layer 2 = GELU's output (5x16), all fp32
    assert saved_activation_bytes(net, x) == 4 * (5 * 8 + 5 * 16 + 5 * 16)


def test_gpt_activations_grow_with_the_batch():
    torch.manual_seed(0)
    model = GPT(CFG)
    x = torch.randint(0, CFG.vocab_size, (4, 32))
    one, four = saved_activation_bytes(model, x[:1], x[:1]), saved_activation_bytes(model, x, x)
    assert four == pytest.approx(4 * one, rel=0.01)  # only the (T,) position ids are shared


def test_naive_attention_keeps_the_t_by_t_scores_flash_does_not():
    T = 64
    naive = training_memory(GPTConfig(**{**CFG.__dict__, "attn": "naive"}), T, autocast="none")
    flash = training_memory(CFG, T, autocast="none")
    # per layer and head, naive attention keeps its T x T fp32 softmax output; flash keeps only the T
    # log-sum-exp values it needs to recompute it in the backward
    diff = naive.activation_bytes_per_sequence - flash.activation_bytes_per_sequence
    assert diff == CFG.n_layer * CFG.n_head * (T * T - T) * 4


def test_state_is_16_bytes_per_parameter_and_the_total_is_linear():
    mem = training_memory(CFG, 32, autocast="none")
    assert mem.params == GPT(CFG).num_params() and mem.state_bytes == STATE_BYTES_PER_PARAM * mem.params
    assert mem.total_bytes(8) == mem.state_bytes + mem.fixed_activation_bytes + 8 * mem.activation_bytes_per_sequence
    assert mem.largest_batch(mem.total_bytes(8)) == 8 and mem.largest_batch(mem.state_bytes) == 0
    assert abs(mem.fixed_activation_bytes) <= 4096  # in fp32 only small shared tensors (position ids) are
    with pytest.raises(ValueError, match="seq must lie"):
        training_memory(CFG, 65)


@pytest.mark.parametrize("autocast", ["none", "bf16"])
def test_the_loss_keeps_fp32_log_probabilities_of_the_whole_vocabulary(autocast):
    torch.manual_seed(0)
    model = GPT(CFG)
    x = torch.randint(0, CFG.vocab_size, (1, 32))
    without, with_loss = saved_activation_bytes(model, x, autocast=autocast), saved_activation_bytes(model, x, x, autocast=autocast)
    # cross-entropy keeps log_softmax's (T, vocab) output for its backward, in fp32 even under bf16 autocast
    assert with_loss - without == pytest.approx(32 * CFG.vocab_size * 4, abs=64)


def test_bf16_weight_copies_are_saved_once_per_pass_not_per_sequence():
    mem = training_memory(CFG, 32, autocast="bf16")
    model = GPT(CFG)
    matmul_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert mem.fixed_activation_bytes == pytest.approx(2 * matmul_weights, abs=4096)  # bf16: 2 bytes each
    assert mem.activation_bytes_per_sequence == pytest.approx(training_memory(CFG, 32, autocast="none")
                                                              .activation_bytes_per_sequence, rel=0.5)
