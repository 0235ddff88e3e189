"""Python and dispatch overhead: the operations one training step dispatches, eager against torch.compile."""

import pytest
import torch

from gpt2lab.lessons import overhead as O


def test_op_kind():
    assert O.op_kind("aten::addmm") == O.op_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "matmul"
    assert O.op_kind("aten::view") == O.op_kind("aten::transpose") == "view"
    assert O.op_kind("aten::gelu") == O.op_kind("aten::add") == "other"


def test_dispatched_ops_counts_top_level_ops_only():
    x = torch.randn(8, 8)
    ops = O.dispatched_ops(lambda: (x.t() @ x + 1).relu())
    assert set(ops) == {"aten::t", "aten::matmul", "aten::add", "aten::relu"}  # matmul's own mm is inside it
    assert sum(ops.values()) == 4


@pytest.mark.slow
def test_compiled_step_dispatches_fewer_ops_and_no_views():
    eager, compiled = O.overhead_experiment("test", batch=1, steps=2)
    assert compiled.n_ops < eager.n_ops / 2, (eager.ops, compiled.ops)
    assert eager.by_kind()["view"] > 0 and compiled.by_kind()["view"] == 0
    assert compiled.by_kind()["matmul"] > 0  # the matmuls are still library calls
    assert compiled.first_s > compiled.median_ms / 1000  # the first call compiled
