"""A metric of your own, as a --plugin: ``--plugin docs/examples/my_metric.py ... --test`` writes
``test.mrr`` into the run JSON, and reports list it.

Mean reciprocal rank: for each query, 1 / the rank of the first database item sharing a label with
it within the top K of the Hamming ranking (0 when none does), averaged over queries.
"""
import numpy as np
import torch

from hyp2.evaluate import METRICS
from hyp2.metrics import hamming_ranking


@METRICS.register("mrr", "mean reciprocal rank of the first relevant item within the top K")
def mean_reciprocal_rank(query_codes, db_codes, query_labels, db_labels, *, topk):
    """(Q, K) and (N, K) codes (real, taken by sign), (Q, C) and (N, C) 0/1 labels -> float."""
    ranked, _ = hamming_ranking(query_codes, db_codes, topk=topk)  # (Q, k): ties in database order
    ql = torch.as_tensor(query_labels).cpu().numpy() > 0
    dl = torch.as_tensor(db_labels).cpu().numpy() > 0
    total = 0.0
    for q in range(len(ranked)):
        relevant = (dl[ranked[q]] & ql[q]).any(axis=1)        # (k,) shares a label with query q
        first = np.flatnonzero(relevant)
        total += 1.0 / (first[0] + 1) if len(first) else 0.0
    return total / len(ranked)
