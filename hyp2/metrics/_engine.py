"""Exact Hamming distances of query tiles against database blocks, by one matrix product.

With signs ``s, t ∈ {±1}^G`` the Hamming distance is ``d = (G - s · t) / 2``: the query row
``[-s / 2, G / 2]`` times the database column ``[t; 1]``. With the bits split into groups small
enough for the compute dtype (128 bits in bfloat16), every operand and every partial sum is a
multiple of 1/2 of magnitude at most G, which the dtype holds exactly, so the product is exact
whatever the accumulation order; group distances are summed in integers. The database operand is
the codes' signs and a ones column: built per block, never for the whole database. Distances are non-negative, and the
bits of a non-negative float read as a signed integer of the same width are monotonic in its
value, so for one group the product's output *is* an integer sort key, with no conversion pass.

Part of :mod:`hyp2.metrics`, the evaluation protocol of HyP² Loss (Xu et al., "HyP² Loss: Beyond
Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1).
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ._inputs import CodeSource
from .options import EngineOptions

_INT_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
# Every integer up to this magnitude is exactly representable in the dtype.
EXACT_INT = {torch.bfloat16: 2**8, torch.float16: 2**11, torch.float32: 2**24}


def int_dtype(max_value: int, signed: bool = False) -> torch.dtype:
    """The smallest of uint8 (unless ``signed``), int16 and int32 holding every integer in
    ``[0, max_value]``: the dtype of distances (``max_value = K``) and of keys built from them."""
    if max_value < 2**8 and not signed:
        return torch.uint8
    return torch.int16 if max_value < 2**15 else torch.int32


class Scratch:
    """Reused work buffers of one worker (a fresh large allocation would page-fault every tile)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        numel = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self._bufs[name] = buf
        return buf[:numel].view(shape)


class Distances:
    """Distance keys of the queries against blocks of any database with the same K.

    :meth:`keys` returns a ``(r, B)`` integer tensor whose order is the distance order (for one
    bit group, the matmul output reinterpreted as ints; otherwise the integer sum of the groups'
    distances). :meth:`decode` maps keys to distances and :meth:`encode` distances to keys.

    Args:
        queries: the ``(Q, K)`` query codes. device: where the work runs.
    """

    def __init__(self, queries: CodeSource, device: torch.device, options: EngineOptions):
        self.device = device
        self.options = options
        self.numpy = options.uses_numpy(device)
        self.dtype = options.dtype_for(device)
        self.num_queries, self.num_bits = queries.rows, queries.num_bits
        k = self.num_bits
        limit = EXACT_INT[self.dtype] // 2  # partial sums: multiples of 1/2 up to G in magnitude
        n_groups = -(-k // min(options.group_bits or limit, limit))
        self.edges = [round(i * k / n_groups) for i in range(n_groups + 1)]
        signs = queries.signs(0, queries.rows, device, self.numpy)
        self.q_ops = []
        for lo, hi in zip(self.edges[:-1], self.edges[1:]):
            q_op = torch.full((signs.shape[0], hi - lo + 1), (hi - lo) / 2, dtype=self.dtype, device=device)
            q_op[:, :-1] = signs[:, lo:hi]
            q_op[:, :-1].mul_(-0.5)
            self.q_ops.append(q_op)
        self.single = n_groups == 1
        self.key_dtype = _INT_VIEW[self.dtype] if self.single else int_dtype(k, signed=True)

    def subset(self, rows: np.ndarray) -> "Distances":
        """The same engine restricted to the queries ``rows`` (an int array)."""
        sub = copy.copy(self)
        idx = torch.as_tensor(rows, device=self.device, dtype=torch.int64)
        sub.q_ops = [op.index_select(0, idx) for op in self.q_ops]
        sub.num_queries = len(rows)
        return sub

    def block(self, db: CodeSource, lo: int, hi: int) -> list[torch.Tensor]:
        """Database operands of rows ``lo:hi``: per bit group a ``(B, G+1)`` tensor ``[t, 1]``."""
        signs = db.signs(lo, hi, self.device, self.numpy)
        ops = []
        for g0, g1 in zip(self.edges[:-1], self.edges[1:]):
            if self.numpy:  # numpy assembles, one torch conversion
                op = np.ones((hi - lo, g1 - g0 + 1), dtype=np.int8)
                op[:, :-1] = signs.numpy()[:, g0:g1]
                ops.append(torch.from_numpy(op).to(self.dtype))
            else:
                op = torch.ones((hi - lo, g1 - g0 + 1), dtype=self.dtype, device=self.device)
                op[:, :-1] = signs[:, g0:g1]
                ops.append(op)
        return ops

    def keys(self, rows: slice, ops: list[torch.Tensor], scratch: Scratch) -> torch.Tensor:
        """``(r, B)`` distance keys of query ``rows`` against a block: a view of a scratch buffer."""
        r = len(range(*rows.indices(self.num_queries)))
        shape = (r, ops[0].shape[0])
        out = scratch.get("mm", shape, self.dtype)
        if self.single:
            torch.mm(self.q_ops[0][rows], ops[0].T, out=out)
            return out.view(self.key_dtype)
        acc = scratch.get("acc", shape, self.key_dtype)
        for g, (q_op, op) in enumerate(zip(self.q_ops, ops)):
            torch.mm(q_op[rows], op.T, out=out)
            if g == 0:
                acc.copy_(out)
            else:
                acc.add_(out.to(self.key_dtype))
        return acc

    def decode(self, keys: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Keys (any shape) -> integer distances: a new int32 tensor, or written to ``out``."""
        src = keys.view(self.dtype) if self.single else keys
        return src.to(torch.int32) if out is None else out.copy_(src)

    def encode(self, dist: Any) -> torch.Tensor:
        """Integer distances (tensor or array, any shape; -1 allowed) -> keys comparable with :meth:`keys`."""
        dist = torch.as_tensor(dist, device=self.device)
        if self.single:
            return dist.to(self.dtype).view(self.key_dtype)
        return dist.to(self.key_dtype)


class LabelOperands:
    """The 0/1 label matrices as matmul operands, for the relevance of every (query, item) pair.

    The product of 0/1 label rows counts the shared labels; a sum of non-negative terms rounds to
    zero only when it is zero, so ``> 0`` is exact in any precision (:meth:`positive`). The counts
    themselves (at most C) are exact too: the compute dtype holds every integer up to C, or
    float32 is used when it does not (more than 256 classes in bfloat16).
    """

    def __init__(self, query_labels: torch.Tensor, eng: Distances):
        self.eng = eng
        classes = query_labels.shape[1]
        self.dtype = eng.dtype if classes <= EXACT_INT[eng.dtype] else torch.float32
        self.q_op = query_labels.to(eng.device).to(self.dtype)

    def block(self, labels, lo: int, hi: int) -> torch.Tensor:
        """``(B, C)`` operand of database rows ``lo:hi`` (``labels`` is a LabelSource)."""
        return labels.block(lo, hi, device=self.eng.device).to(self.dtype)

    def relevant(self, rows: slice, op: torch.Tensor, scratch: Scratch) -> torch.Tensor:
        """``(r, B)`` exact shared-label counts as floats (a view of a scratch buffer)."""
        q = self.q_op[rows]
        out = scratch.get("labels", (q.shape[0], op.shape[0]), self.dtype)
        return torch.mm(q, op.T, out=out)

    def values(self, counts: torch.Tensor, flat: Any) -> np.ndarray:
        """The counts (a tensor of :meth:`relevant`) at ``flat`` positions of its flattened form:
        int64 numpy. The numpy engine reads the float bits with numpy (bfloat16: the top half of
        a float32), avoiding a torch op per tile."""
        if not self.eng.numpy:
            flat_counts = counts.reshape(-1)
            return flat_counts[torch.as_tensor(flat, device=flat_counts.device)].to(torch.int64).cpu().numpy()
        if counts.dtype == torch.bfloat16:
            bits = counts.view(torch.int16).numpy().reshape(-1).take(flat).astype(np.int32)
            bits <<= 16
            return bits.view(np.float32).astype(np.int64)
        return counts.numpy().reshape(-1).take(flat).astype(np.int64)  # float16 and float32: numpy types

    def positive(self, counts: torch.Tensor) -> Any:
        """Relevance (count > 0) as a bool numpy array (numpy engine) or tensor. A non-negative
        float is positive exactly when its bits, read as a signed integer, are: one integer
        compare instead of a slower low-precision float one."""
        ints = counts.view(_INT_VIEW[counts.dtype])
        return ints.numpy() > 0 if self.eng.numpy else ints > 0
