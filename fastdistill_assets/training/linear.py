"""Hashed sparse linear models in numpy: a softmax classifier and a listwise ranker."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

DIM = 1 << 16


def hash_features(names: Sequence[str], dim: int = DIM) -> np.ndarray:
    """Stable (crc32) hashing of feature names to indices, identical in every process."""
    return np.fromiter((zlib.crc32(n.encode()) % dim for n in names), dtype=np.int64, count=len(names))


def _softmax(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max())
    return z / z.sum()


def _slot_counts(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A feature bag's distinct slots and how often each occurs (as floats, to scale gradients);
    None for the counts when every slot occurs once (the common case, kept cheap)."""
    if len(set(idx.tolist())) == len(idx):
        return idx, None
    unique, counts = np.unique(idx, return_counts=True)
    return unique, counts.astype(float)


class Ranker:
    """Chooses one of several candidates, each a bag of hashed features (a softmax over candidates).

    A multiclass classifier is the special case where candidate k's features are the input's
    features tagged with k.
    """

    def __init__(self, dim: int = DIM, weights: np.ndarray | None = None) -> None:
        self.w = np.zeros(dim) if weights is None else weights
        self._g2 = np.full(dim, 1e-8)

    def scores(self, candidates: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([self.w[idx].sum() for idx in candidates])

    def predict(self, candidates: Sequence[np.ndarray]) -> int:
        return int(np.argmax(self.scores(candidates)))

    def fit(self, groups: Sequence[Sequence[np.ndarray]], targets: Sequence[int], epochs: int, lr: float,
            seed: int = 0, l2: float = 1e-6) -> None:
        """Per-example Adagrad on the cross-entropy over each group's candidates.

        A candidate's score is the sum of its slots' weights, so a slot that occurs c times in it
        (a repeated feature, or two names hashing alike) gets c times the candidate's gradient,
        plus the L2 term once: ``g = c * grad + l2 * w``.
        """
        rng = np.random.default_rng(seed)
        order = np.arange(len(groups))
        slots = [[_slot_counts(idx) for idx in candidates] for candidates in groups]
        for _ in range(epochs):
            rng.shuffle(order)
            for i in order:
                candidates = groups[i]
                probs = _softmax(self.scores(candidates))
                for k, (unique, counts) in enumerate(slots[i]):
                    grad = probs[k] - (1.0 if k == targets[i] else 0.0)
                    if abs(grad) < 1e-4:
                        continue
                    g = (grad if counts is None else counts * grad) + l2 * self.w[unique]
                    self._g2[unique] += g * g
                    self.w[unique] -= lr * g / np.sqrt(self._g2[unique])


def classifier_candidates(features: Sequence[str], n_classes: int) -> list[np.ndarray]:
    """Candidate feature bags for a multiclass decision: every feature tagged with its class."""
    return [hash_features([f"{k}|{f}" for f in features] + [f"{k}|bias"]) for k in range(n_classes)]
