"""Tuning knobs of the metrics engine, passed explicitly (never module globals).

Results never depend on these options: every setting gives the same exact numbers, only the time
and the memory change. Tests use them to force the rarely taken paths (tiny blocks, tiny budgets,
a sampled threshold that falls short, the torch code path on the CPU, float32 and float16 matmuls).

Part of :mod:`hyp2.metrics`, the evaluation protocol of HyP² Loss (Xu et al., "HyP² Loss: Beyond
Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..validate import check_int, check_real

__all__ = ["EngineOptions", "DEFAULT_OPTIONS"]

_BACKENDS = ("auto", "numpy", "torch")
_DTYPES = (None, torch.bfloat16, torch.float16, torch.float32)
_MAX_TILE_ROWS = 2**16


@dataclass(frozen=True)
class EngineOptions:
    """How the metrics engine computes (see ``docs/evaluation.md``, "How it stays exact and fast").

    Attributes:
        backend: ``"auto"`` (numpy for the per-pair work on the CPU, torch on other devices),
            ``"torch"`` (torch everywhere: the GPU code path, runnable on a CPU) or ``"numpy"``
            (CPU codes only).
        compute_dtype: matmul dtype; None picks bfloat16 on CPUs that support it (float32
            elsewhere) and float16 on GPUs. Every choice is exact (bit groups are sized for it).
        group_bits: most code bits per matmul group; None: the most the dtype keeps exact (128
            for bfloat16, 1024 for float16, 2**23 for float32). Smaller values only split the work.
        block_items: database items per block (the database is streamed block by block, in
            order); None: 8192 on the CPU, 2**18 on a GPU.
        query_rows: queries per matmul tile; None: 512 on the CPU, 2048 on a GPU. Larger values
            than 65,536 are taken as 65,536.
        sample_size: database items sampled to estimate each query's top-k distance bound.
        sample_z: safety margin of that estimate, in standard deviations of the sampled count; a
            bound that still falls short is detected and the query is redone exactly.
        memory_bytes: budget for the per-query candidates and state (the top-k candidates are
            compacted, and queries are processed in groups, to stay within it).
        workers: query groups (or database ranges) processed concurrently; None: up to 4 threads
            on the CPU (numpy and torch release the GIL), 1 on a GPU.
    """

    backend: str = "auto"
    compute_dtype: torch.dtype | None = None
    group_bits: int | None = None
    block_items: int | None = None
    query_rows: int | None = None
    sample_size: int = 16384
    sample_z: float = 4.0
    memory_bytes: int = 512 * 2**20
    workers: int | None = None

    def __post_init__(self) -> None:
        owner = "EngineOptions"
        if self.backend not in _BACKENDS:
            raise ValueError(f"{owner}: backend must be one of {', '.join(_BACKENDS)}, got {self.backend!r}")
        if self.compute_dtype not in _DTYPES:
            raise ValueError(f"{owner}: compute_dtype must be None, torch.bfloat16, torch.float16 or "
                             f"torch.float32, got {self.compute_dtype!r}")
        for name in ("group_bits", "block_items", "query_rows", "workers"):
            if getattr(self, name) is not None:
                check_int(owner, name, getattr(self, name), minimum=1)
        check_int(owner, "sample_size", self.sample_size, minimum=1)
        check_int(owner, "memory_bytes", self.memory_bytes, minimum=1)
        check_real(owner, "sample_z", self.sample_z)

    def uses_numpy(self, device: torch.device) -> bool:
        """Whether the per-pair work runs on numpy (CPU tensors only)."""
        if self.backend == "numpy" and device.type != "cpu":
            raise ValueError(f"EngineOptions: backend 'numpy' needs CPU codes, got {device} tensors")
        return device.type == "cpu" and self.backend != "torch"

    def dtype_for(self, device: torch.device) -> torch.dtype:
        """The matmul dtype on ``device``."""
        if self.compute_dtype is not None:
            return self.compute_dtype
        if device.type != "cpu":
            return torch.float16
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return torch.bfloat16
        except (AttributeError, RuntimeError):
            pass
        return torch.float32

    def block_for(self, device: torch.device) -> int:
        return self.block_items or (8192 if device.type == "cpu" else 2**18)

    def rows_for(self, device: torch.device) -> int:
        # At most 2**16: the consumers store a row's place within its tile as uint16.
        return min(self.query_rows or (512 if device.type == "cpu" else 2048), _MAX_TILE_ROWS)

    def workers_for(self, device: torch.device) -> int:
        if self.workers is not None:
            return self.workers
        return 1 if device.type != "cpu" else max(1, min(4, torch.get_num_threads()))


DEFAULT_OPTIONS = EngineOptions()
