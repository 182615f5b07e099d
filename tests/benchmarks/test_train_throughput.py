"""The throughput benchmark's profile analysis (benchmarks/train_throughput.py): the idle
stretches between device activities and what the host was doing when they ended."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from train_throughput import KernelProfiler, idle_stretches


def test_idle_stretches_count_from_the_latest_end_of_overlapping_kernels() -> None:
    spans = [(25, 30, "c"), (0, 10, "a"), (5, 20, "b"), (30, 31, "d"), (40, 41, "e")]
    assert list(idle_stretches(spans)) == [(5, 20, "b", "c"), (9, 31, "d", "e")]
    assert list(idle_stretches([])) == []


class _Trace:
    """A host-side profile that exports a given chrome trace."""

    def __init__(self, events: list[dict]) -> None:
        self.events = events

    def export_chrome_trace(self, path: str) -> None:
        Path(path).write_text(json.dumps({"traceEvents": self.events}))


def test_gap_causes_name_the_late_launch_and_the_host_wait_before_it() -> None:
    def span(cat: str, name: str, ts: float, dur: float, **args) -> dict:
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "tid": 7, "args": args}

    profiler = KernelProfiler(first=1)
    profiler.attribution = _Trace(
        [
            span("kernel", "gemm", 0, 100, correlation=1),
            span("kernel", "triton_norm", 2100, 100, correlation=2),
            span("kernel", "small", 2250, 10, correlation=3),  # a 50 us gap: not listed
            span("cuda_driver", "cuLaunchKernel", 2050, 5, correlation=2),
            span("cuda_runtime", "cudaStreamSynchronize", 50, 300),
            span("cpu_op", "step", 0, 3000),
            span("cpu_op", "aten::item", 40, 400),
            span("python_function", "loops.py(12): collate", 500, 1540),
        ]
    )
    [cause] = profiler.gap_causes(min_us=500)
    assert cause["us"] == 2000 and cause["kernel"] == "triton_norm"
    assert cause["launch_late_us"] == 1950  # the GPU waited for the host
    assert cause["launched_in"] == ["step"]  # the Python frame ended before the launch
    assert cause["host_waits"] == [
        {"call": "cudaStreamSynchronize", "us": 300, "in": ["aten::item", "step"]}
    ]
