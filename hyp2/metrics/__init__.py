"""Exact, fast retrieval metrics for Hamming ranking of binary hash codes.

The evaluation protocol is the one of HyP² Loss (Xu et al., "HyP² Loss: Beyond Hypersphere Metric
Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1): the sign of each network output is a
K-bit code, the database is ranked by Hamming distance to each query, and a database item is
relevant to a query when the two share at least one label. The reported metric is mAP@topk (the
official code uses topk = 5000 on NUS-WIDE, 1000 on MIRFLICKR-25K, the whole database on VOC).
Precision@N, recall@N, the precision-recall curve over Hamming radii and the precision within
Hamming radius 2 follow the usual deep-hashing protocol (e.g. Cao et al., "HashNet: Deep Learning
to Hash by Continuation", ICCV 2017, experiments section). Graded multi-label metrics (ACG, NDCG,
weighted mAP: Zhao et al., DSRH, CVPR 2015) use the number of shared labels, and the tie-aware
mAP (He et al., "Hashing as Tie-Aware Learning to Rank", CVPR 2018) averages AP over every order
of the tied items (:mod:`.multilabel`).

Conventions (all functions):

* Codes are ``(N, K)`` arrays (torch tensors or numpy arrays) of ±1 values or of reals taken by
  sign, where ``0`` (and ``-0.0``) maps to ``+1`` (``np.sign`` would give 0; we never do).
  ``bool`` arrays are bits (True is +1). Unsigned-integer arrays are rejected unless ``num_bits``
  is given, in which case both code arrays must be bit-packed ``uint8`` of shape
  ``(N, ceil(num_bits / 8))`` in :func:`numpy.packbits` order (first code bit is the most
  significant bit of byte 0; bit 1 is +1), as produced by :func:`pack_codes`.
* Labels are ``(N, C)`` arrays of 0/1 (or bool). Relevance: at least one shared label.
* Ranking: ascending Hamming distance, ties broken by database order (a stable sort). The official
  code ranks with an unstable ``np.argsort``; we deliberately do not copy that.
* ``topk=None`` means the whole database; a ``topk`` above the database size means the whole
  database; ``topk < 1`` raises ``ValueError``.
* Empty database: ``ValueError`` everywhere. Empty query set: ``ValueError`` for the metrics (a
  mean over no query is undefined); :func:`hamming_distance` / :func:`hamming_ranking` return
  empty ``(0, ·)`` arrays.
* Inputs are never modified. The database is read block by block, never copied whole, except a
  numpy array in big-endian byte order or with negative strides (torch cannot view those; it is
  copied once into native order). Metric values are python floats (or lists of floats). When a
  code array is a CUDA tensor the computation runs on that device.

Layout: :mod:`.functions` and :mod:`.multilabel` hold the public functions; the engine behind
them is :mod:`._engine` (distances by one exact low-precision matrix product), :mod:`._consumers`
(the per-pair work: histograms, the running top-k, whole-ranking AP), :mod:`._graded` (shared-label
counts, IDCG, the graded terms), :mod:`._ties` (the tie-aware AP's closed form), :mod:`._scan` (the
database streamed in blocks, queries in groups, worker threads) and :mod:`._flows` (the passes
assembled).
Its knobs are :class:`EngineOptions`, passed explicitly as ``options=``; they change the speed
and the memory, never a result. ``docs/evaluation.md`` explains the design and has the
measurements.
"""
from .functions import *  # noqa: F403 - the public functions, listed in functions.__all__
from .functions import __all__ as _functions
from .multilabel import *  # noqa: F403 - graded multi-label metrics and tie-aware mAP
from .multilabel import __all__ as _multilabel
from .options import EngineOptions

__all__ = [*_functions, *_multilabel, "EngineOptions"]
