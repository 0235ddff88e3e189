"""The shared timer and memory probe."""

import time

import pytest
import torch

from gpt2lab.base.timing import Measurement, measure, peak_memory, tensor_step_mb


def test_measure_times_every_call_and_keeps_warmup_apart():
    calls = []

    def work():
        calls.append(1)
        time.sleep(0.002)
        return len(calls)

    m = measure(work, "cpu", steps=5, warmup=2)
    assert len(calls) == 7 and len(m.times_ms) == 5 and m.last == 7
    assert all(t >= 2.0 for t in m.times_ms)  # sleep(0.002) cannot take less than 2 ms
    assert m.first_s >= 0.002 and m.warmup_s >= m.first_s
    assert m.min_ms <= m.median_ms <= m.max_ms
    with pytest.raises(ValueError):
        measure(work, "cpu", steps=0)


def test_measurement_spread():
    m = Measurement([10.0, 12.0, 30.0])
    assert m.median_ms == 12.0 and m.spread == pytest.approx(20 / 12)


@pytest.mark.slow
def test_peak_memory_sees_a_block_allocation_and_not_what_came_before():
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB allocated and freed before the block
    del big
    with peak_memory("cpu") as mem:
        x = torch.ones(128 * 2**20 // 4)  # 128 MiB inside the block
        del x
    if mem.kind == "process peak RSS during the block":  # Linux
        assert 120 <= mem.step_mb <= 200, mem
    else:
        assert mem.peak_mb > 0
    with peak_memory("cpu") as small:
        torch.ones(16)
    if small.kind == "process peak RSS during the block":
        assert small.step_mb < 60, small  # the earlier 128 MiB block does not count here


def test_tensor_step_mb_counts_the_peak_of_tensors_held_at_once():
    held_before = torch.ones(32 * 2**20 // 4)  # 32 MiB that exist before the call and are freed inside it

    def step():
        nonlocal held_before
        held_before = None  # its free is not counted: the count starts at zero
        a = torch.ones(16 * 2**20 // 4)  # 16 MiB
        b = torch.ones(8 * 2**20 // 4)  # + 8 MiB held at once: the peak
        del a, b
        c = torch.ones(20 * 2**20 // 4)  # 20 MiB after they were freed: not a new peak
        del c

    assert tensor_step_mb(step, "cpu") == pytest.approx(24, abs=0.1)
    assert tensor_step_mb(lambda: None, "cpu") == 0


def test_quiet_stderr_silences_file_descriptor_2(capfd):
    import os

    from gpt2lab.base.timing import quiet_stderr

    with quiet_stderr():
        os.write(2, b"from C++\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_cpu_allocations_lists_allocations_and_frees_in_order():
    from gpt2lab.base.timing import cpu_allocations

    def step():
        a = torch.ones(2**20 // 4)  # 1 MiB
        b = torch.ones(2**21 // 4)  # 2 MiB
        del a, b

    events = [e for e in cpu_allocations(step) if abs(e) >= 2**20]
    assert events == [2**20, 2**21, -(2**20), -(2**21)]
