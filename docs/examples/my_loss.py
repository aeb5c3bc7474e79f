"""A loss of your own, as a --plugin: ``--plugin docs/examples/my_loss.py --loss pair_cosine``.

Pairwise cosine hinge: over the ordered pairs of a batch, codes of images sharing a label are
pulled together (1 − cos) and the others pushed below ``margin`` (relu(cos − margin)). A small
cousin of HyP²'s pair term, to show the parts every loss has: declared options, its terms and how
they add up (the base class checks the batch, records the terms and sums them). A loss with
learnable parts (proxies, centres) makes them ``nn.Parameter``s; they are saved with the
checkpoint and trained at ``--rate``.
"""
import torch
import torch.nn.functional as F

from hyp2.losses import LOSSES, HashLoss, Option


@LOSSES.register("pair_cosine", "example plugin: pairwise cosine hinge")
class PairCosine(HashLoss):
    # Each option: name, default, what it does, where the default comes from, and its bounds.
    options = (
        Option("margin", 0.0, "hinge on the cosine of pairs sharing no label", "this example", low=-1.0, high=1.0),
        Option("push_weight", 1.0, "weight of the push term", "this example", low=0.0),
    )

    # loss = pull + push_weight * push (a number, or the name of an option)
    weights = {"pull": 1.0, "push": "push_weight"}

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """h (B, K) outputs, labels (B, C) 0/1 in h's dtype (checked by the base class) -> terms."""
        unit = F.normalize(h, dim=1)
        cos = unit @ unit.T                                  # (B, B)
        other = 1 - torch.eye(len(h), dtype=h.dtype, device=h.device)
        similar = ((labels @ labels.T) > 0).to(h.dtype) * other
        dissimilar = (1 - similar) * other
        pull = ((1 - cos) * similar).sum() / similar.sum().clamp(min=1)   # 0, not NaN, without pairs
        push = (F.relu(cos - self.margin) * dissimilar).sum() / dissimilar.sum().clamp(min=1)
        return {"pull": pull, "push": push}                  # recorded, detached, for the log
