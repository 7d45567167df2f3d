"""Pick the misclassified test images worth looking at: the most confident errors, spread over the classes.

Taking the first errors of a class-sorted test set shows one confusion many times (e.g. all "0 → 5");
:class:`ConfidentErrors` keeps, for every true class, its most confident mistakes, and :meth:`select` takes
them round-robin over the classes (classes with the most confident error first).
"""

from __future__ import annotations

import heapq
import itertools
import math

import torch
from torch import Tensor


class ConfidentErrors:
    """Collect misclassified images batch by batch, keeping a bounded number per true class.

    ``total`` is how many images :meth:`select` will be asked for; each class keeps
    ``max(2, ceil(2 * total / num_classes))`` images, so memory stays near ``2 * total`` images.
    """

    def __init__(self, total: int, num_classes: int) -> None:
        self.total = int(total)
        self.per_class = max(2, math.ceil(2 * self.total / max(1, int(num_classes))))
        self._heaps: dict[int, list[tuple[float, int, Tensor, int, int]]] = {}
        self._counter = itertools.count()

    def offer(self, images: Tensor, labels: Tensor, logits: Tensor) -> None:
        """Consider one batch: (B, C, H, W) images, (B,) int labels, (B, K) logits."""
        if self.total <= 0:
            return
        conf, pred = logits.detach().float().softmax(dim=-1).max(dim=-1)
        wrong = torch.nonzero(pred != labels).flatten()
        if wrong.numel() == 0:
            return
        for i, c, t, p in zip(
            wrong.tolist(), conf[wrong].tolist(), labels[wrong].tolist(), pred[wrong].tolist(), strict=True
        ):
            heap = self._heaps.setdefault(int(t), [])
            if len(heap) >= self.per_class and c <= heap[0][0]:
                continue
            item = (float(c), next(self._counter), images[i].detach().float().cpu(), int(t), int(p))
            if len(heap) < self.per_class:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    def select(self, n: int | None = None) -> list[tuple[Tensor, int, int, float]]:
        """Up to ``n`` (default ``total``) ``(image, true, predicted, confidence)``, round-robin over classes."""
        n = self.total if n is None else int(n)
        per_class = [sorted(h, key=lambda item: -item[0]) for h in self._heaps.values() if h]
        per_class.sort(key=lambda items: -items[0][0])
        chosen: list[tuple[Tensor, int, int, float]] = []
        for rank in range(max((len(items) for items in per_class), default=0)):
            for items in per_class:
                if rank < len(items) and len(chosen) < n:
                    conf, _, image, true, pred = items[rank]
                    chosen.append((image, true, pred, conf))
        return chosen

    def __len__(self) -> int:
        """Number of images held."""
        return sum(len(h) for h in self._heaps.values())
