"""Validation and normalisation of codes and labels (conventions: the package docstring).

Query codes are converted whole (``(Q, K)`` bits). The database is not copied whole: a
:class:`CodeSource` or :class:`LabelSource` validates it in row blocks and hands out the bits or
labels of one database block at a time, so the extra memory does not grow with N. The exception
is a numpy array torch cannot view (big-endian, or negative strides): :func:`to_tensor` copies it
once, whole, into native order.

Part of :mod:`hyp2.metrics`, the evaluation protocol of HyP² Loss (Xu et al., "HyP² Loss: Beyond
Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1).
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from ..validate import check_int, is_int


def signs(x: torch.Tensor, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """The project's one sign rule: ±1 of ``dtype`` from real values (``x >= 0`` is +1, so 0 is +1
    and every bit is a valid code bit) or from bool bits (True is +1). Elementwise, on ``x``'s
    device, no check and no read on the host (the losses use it inside a training step)."""
    bits = x if x.dtype == torch.bool else x >= 0
    return bits.to(dtype) * 2 - 1

_OWNER = "hyp2.metrics"  # how argument errors name their source
_CHECK_ROWS = 1 << 16  # rows per validation step (bounds the temporaries of the checks)
_UNSIGNED = (torch.uint8, torch.uint16, torch.uint32, torch.uint64)


def to_tensor(x: Any, name: str) -> torch.Tensor:
    """A torch view of ``x``, never written to: no copy, except for a numpy array in big-endian
    byte order or with a negative stride, which is copied whole (torch cannot view those)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise ValueError(f"{name}: object arrays are not supported; pass a numeric array")
        if x.dtype.byteorder == ">":
            x = x.astype(x.dtype.newbyteorder("="))
        if any(st < 0 for st in x.strides):  # torch views only non-negative strides
            x = np.ascontiguousarray(x)
        with warnings.catch_warnings():
            # torch warns about read-only arrays because tensors could write to them; we never do.
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(x)  # a view, whatever the (non-negative) strides
    raise ValueError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _row_blocks(n: int, rows: int = _CHECK_ROWS):
    return ((lo, min(lo + rows, n)) for lo in range(0, n, rows))


def unpack_tensor(packed: torch.Tensor, num_bits: int) -> torch.Tensor:
    """(N, ceil(num_bits/8)) uint8 -> (N, num_bits) bool, numpy.packbits (big-endian) bit order."""
    shifts = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    bits = (packed.unsqueeze(-1) >> shifts).bitwise_and_(1).bool()
    return bits.reshape(packed.shape[0], -1)[:, :num_bits]


class CodeSource:
    """Validated ``(N, K)`` codes whose bits are produced one row block at a time.

    Args:
        codes: ``(N, K)`` ±1 / real / bool codes, or ``(N, ceil(num_bits/8))`` uint8 packed codes
            when ``num_bits`` is given (torch or numpy; never modified, never copied whole).
        name: argument name used in error messages.
    Attributes:
        rows: N. num_bits: K. device: the codes' device.
    """

    def __init__(self, codes: Any, name: str, num_bits: int | None = None):
        t = to_tensor(codes, name)
        self.name = name
        self.packed = num_bits is not None
        if self.packed:
            self.num_bits = check_int(_OWNER, "num_bits", num_bits, minimum=1)
            self._check_packed(t, self.num_bits)
        else:
            self._check_codes(t)
            self.num_bits = t.shape[1]
        self.tensor = t
        self.rows = t.shape[0]
        self.device = t.device

    def _check_packed(self, t: torch.Tensor, num_bits: int) -> None:
        name = self.name
        if t.dtype != torch.uint8:
            raise ValueError(f"{name}: packed codes must be uint8, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name}: packed codes must be 2-D (N, ceil(num_bits/8)), got shape "
                             f"{tuple(t.shape)}")
        nbytes = (num_bits + 7) // 8
        if t.shape[1] != nbytes:
            raise ValueError(f"{name}: packed codes have {t.shape[1]} bytes per row but "
                             f"num_bits={num_bits} needs ceil({num_bits}/8)={nbytes}")

    def _check_codes(self, t: torch.Tensor) -> None:
        name = self.name
        if t.dim() != 2:
            raise ValueError(f"{name}: codes must be 2-D (N, K), got shape {tuple(t.shape)}")
        if t.shape[1] < 1:
            raise ValueError(f"{name}: codes have zero bits (shape {tuple(t.shape)})")
        if t.dtype in _UNSIGNED:
            raise ValueError(f"{name}: unsigned {t.dtype} codes are ambiguous; pass num_bits=K for "
                             f"bit-packed codes, or ±1 / real codes as a signed or float array")
        if t.is_complex():
            raise ValueError(f"{name}: complex codes are not supported")
        if t.is_floating_point() and any(bool(torch.isnan(t[lo:hi]).any())
                                         for lo, hi in _row_blocks(t.shape[0])):
            raise ValueError(f"{name}: codes contain NaN, whose sign is undefined")

    def every(self, step: int) -> "CodeSource":
        """The same codes restricted to every ``step``-th row (a view, for sampling)."""
        sub = copy.copy(self)
        sub.tensor = self.tensor[::step]
        sub.rows = sub.tensor.shape[0]
        return sub

    def bits(self, lo: int = 0, hi: int | None = None, device: torch.device | None = None) -> torch.Tensor:
        """``(hi - lo, K)`` bool bits of rows ``lo:hi`` on ``device`` (default: the codes'), True = +1."""
        t = self.tensor[lo:hi]
        if device is not None:
            t = t.to(device, non_blocking=True)
        if self.packed:
            return unpack_tensor(t, self.num_bits)
        return t if t.dtype == torch.bool else t >= 0

    def signs(self, lo: int, hi: int, device: torch.device, numpy: bool = True) -> torch.Tensor:
        """``(hi - lo, K)`` int8 signs (±1) of rows ``lo:hi`` on ``device``.

        With ``numpy`` (the engine's numpy backend) and CPU codes this is numpy work (a few
        vectorised passes; torch's per-op threading costs more than the work on blocks this
        small); otherwise torch ops, as on a GPU.
        """
        t = self.tensor[lo:hi]
        if numpy and device.type == "cpu" and t.device.type == "cpu" and t.dtype not in _NO_NUMPY:
            a = t.numpy()
            if self.packed:
                b = np.unpackbits(a, axis=1, count=self.num_bits).view(np.int8)
            else:
                b = a.view(np.int8) if a.dtype == np.bool_ else (a >= 0).view(np.int8)
            s = b + b
            s -= 1
            return torch.from_numpy(s)
        return self.bits(lo, hi, device).to(torch.int8).mul_(2).sub_(1)


_NO_NUMPY = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2) if hasattr(torch, "float8_e4m3fn") \
    else (torch.bfloat16,)


class LabelSource:
    """Validated ``(N, C)`` 0/1 labels, read one row block at a time."""

    def __init__(self, labels: Any, name: str, n_rows: int):
        t = to_tensor(labels, name)
        if t.dim() != 2:
            raise ValueError(f"{name}: labels must be 2-D (N, C), got shape {tuple(t.shape)}")
        if t.shape[0] != n_rows:
            raise ValueError(f"{name}: {t.shape[0]} label rows but {n_rows} codes")
        if t.dtype != torch.bool:
            if t.is_complex():
                raise ValueError(f"{name}: complex labels are not supported")
            for lo, hi in _row_blocks(t.shape[0]):
                b = t[lo:hi]
                if b.numel() and not bool(((b == 0) | (b == 1)).all()):
                    raise ValueError(f"{name}: labels must be 0/1 (multi-hot), found other values")
        self.tensor = t
        self.classes = t.shape[1]

    def block(self, lo: int = 0, hi: int | None = None, device: torch.device | None = None) -> torch.Tensor:
        """``(hi - lo, C)`` bool labels of rows ``lo:hi``."""
        t = self.tensor[lo:hi]
        if device is not None:
            t = t.to(device, non_blocking=True)
        return t if t.dtype == torch.bool else t != 0

    def masks(self) -> np.ndarray:
        """``(N, W)`` int64 bitmasks of every row, ``W = max(1, ceil(C / 64))`` (8 W bytes a row)."""
        out = np.empty((self.tensor.shape[0], max(1, -(-self.classes // 64))), dtype=np.int64)
        for lo, hi in _row_blocks(self.tensor.shape[0]):
            out[lo:hi] = label_masks(self.block(lo, hi).cpu().numpy())
        return out


def label_masks(bits: np.ndarray) -> np.ndarray:
    """``(N, C)`` bool labels -> ``(N, W)`` int64 bitmasks, ``W = max(1, ceil(C / 64))``."""
    packed = np.packbits(bits, axis=1)  # (N, ceil(C/8))
    width = max(1, -(-packed.shape[1] // 8)) * 8
    padded = np.zeros((packed.shape[0], width), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.int64)


def check_topk(topk: int | None, n_db: int) -> int:
    if topk is None:
        return n_db
    return min(check_int(_OWNER, "topk (None: the whole database)", topk, minimum=1), n_db)


def check_ns(ns: int | Sequence[int], n_db: int, *, drop_large: bool) -> list[int]:
    ns_list = [ns] if isinstance(ns, (int, np.integer)) else list(ns)
    out = []
    for n in ns_list:
        if not is_int(n) or n < 1:
            raise ValueError(f"ns must hold positive ints, got {n!r}")
        if n > n_db:
            if drop_large:
                continue
            raise ValueError(f"N={n} exceeds the database size {n_db}; pass N <= {n_db}")
        out.append(int(n))
    return out


def check_chunk(chunk_size: int | None) -> int | None:
    return None if chunk_size is None else check_int(_OWNER, "chunk_size", chunk_size, minimum=1)
