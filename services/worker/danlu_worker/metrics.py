"""Throughput, model FLOPs utilisation, memory and ETA for the metrics events.

MFU follows the PaLM paper's estimate: training costs ``6·N`` FLOPs per token for a model of
``N`` parameters (forward 2N, backward 4N); with LoRA the frozen weights need no weight
gradients, so ``4·N`` (adapter FLOPs are negligible). It is divided by the peak dense BF16
throughput of the GPUs (a table of common data-centre GPUs; 0 where unknown, e.g. on CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from google.protobuf import duration_pb2

from danlu.training.v1 import training_job_pb2

# Dense (non-sparse) peak FLOP/s per GPU for 16-bit matmuls, by substring of the device name.
_PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100", 989e12),  # SXM; the PCIe part is lower, the estimate stays conservative
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),
    ("T4", 65e12),
)


def peak_flops_per_device(device: torch.device) -> float:
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    for key, flops in _PEAK_FLOPS:
        if key in name:
            return flops
    return 0.0


@dataclass
class ThroughputMeter:
    """Measures optimizer steps and derives tokens/s, MFU, memory and ETA."""

    total_steps: int
    parameters: int
    lora: bool
    device: torch.device
    world_size: int = 1
    _steps_timed: int = 0
    _last: float = field(default_factory=time.perf_counter)
    _elapsed: float = 0.0

    def __post_init__(self) -> None:
        self._peak = peak_flops_per_device(self.device) * self.world_size
        self._flops_per_token = (4 if self.lora else 6) * self.parameters
        self.reset_memory()

    def restart_clock(self) -> None:
        """Exclude evaluation and checkpoint time from step timing."""
        self._last = time.perf_counter()

    def step_done(
        self,
        *,
        step: int,
        epoch: float,
        loss: float,
        learning_rate: float,
        grad_norm: float,
        tokens: int,
    ) -> training_job_pb2.TrainingMetrics:
        """Metrics for an optimizer step that processed ``tokens`` real tokens (all ranks)."""
        now = time.perf_counter()
        seconds = max(now - self._last, 1e-9)
        self._last = now
        self._steps_timed += 1
        self._elapsed += seconds
        tokens_per_second = tokens / seconds
        mfu = self._flops_per_token * tokens_per_second / self._peak if self._peak else 0.0
        metrics = training_job_pb2.TrainingMetrics(
            step=step,
            epoch=epoch,
            loss=loss,
            learning_rate=learning_rate,
            grad_norm=grad_norm,
            tokens_per_second=tokens_per_second,
            mfu=min(mfu, 1.0),
        )
        if self.device.type == "cuda":
            metrics.memory_allocated_bytes = torch.cuda.max_memory_allocated(self.device)
            metrics.memory_reserved_bytes = torch.cuda.max_memory_reserved(self.device)
            self.reset_memory()
        remaining = self.total_steps - step
        if remaining >= 0:
            eta = duration_pb2.Duration()
            eta.FromNanoseconds(int(self._elapsed / self._steps_timed * remaining * 1e9))
            metrics.eta.CopyFrom(eta)
        return metrics

    def reset_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
