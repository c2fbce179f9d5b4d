"""Whether a challenger model really beats the current one, decided so that noise on a small
held-out set cannot promote it.

Both models are scored on the same held-out images, so the comparison is paired: only the
images where exactly one of them is right carry information (McNemar). The challenger must win
enough of those that a fair coin would give as many wins with probability below `alpha` (the
exact one-sided binomial tail, valid however few such images there are), by at least the gain
the user asked for. The exact test is what lets a small labeled folder promote a model that is
clearly better (a fine-tune at 0.54 against frozen features at 0.27 on 37 held-out photos)
while a held-out set too small to say anything still decides nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_EVAL = 20  # held-out images below which no promotion is decided
ALPHA = 0.05  # chance of promoting a model that is no better


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    wins: int  # images the challenger gets right and the current model wrong
    losses: int  # the reverse


def decide(
    challenger_hits: np.ndarray,
    current_hits: np.ndarray,
    *,
    min_improvement: float = 0.0,
    min_eval: int = MIN_EVAL,
    alpha: float = ALPHA,
) -> Decision:
    """Promote when the held-out set has `min_eval` images, the accuracy gain is at least
    `min_improvement`, and so many of the discordant images are wins that a fair coin would
    reach as many with probability below `alpha`."""
    n = len(challenger_hits)
    wins = int(np.sum(challenger_hits & ~current_hits))
    losses = int(np.sum(~challenger_hits & current_hits))
    gain = (wins - losses) / n if n else 0.0
    if n < min_eval:
        why = f"only {n} held-out images (need {min_eval} to decide); label more images"
        return Decision(False, why, wins, losses)
    p = sign_test(wins, losses)
    if p >= alpha or gain < min_improvement:
        needs = f"p < {alpha}" + (f" and a gain of {min_improvement:g}+" if min_improvement else "")
        why = (
            f"not better beyond noise: {wins} held-out images won, {losses} lost "
            f"(sign test p = {p:.3g}; promotion needs {needs}); more labeled images let a "
            "smaller gain show"
        )
        return Decision(False, why, wins, losses)
    return Decision(True, f"better: {wins} held-out images won, {losses} lost", wins, losses)


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact p-value: P(at least `wins` heads in wins + losses fair tosses)."""
    d = wins + losses
    if d == 0:
        return 1.0
    return sum(math.comb(d, k) for k in range(wins, d + 1)) / 2**d
