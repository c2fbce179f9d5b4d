"""Whether a challenger model really beats the current one, decided so that noise on a small
held-out set cannot promote it.

Both models are scored on the same held-out images, so the comparison is paired: only the
images where exactly one of them is right carry information (McNemar). The challenger must win
enough of those that chance would rarely give the same margin, on a held-out set large enough
to say anything, and by at least the gain the user asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_EVAL = 50  # held-out images below which no promotion is decided
Z_ONE_SIDED_95 = 1.645


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
    z: float = Z_ONE_SIDED_95,
) -> Decision:
    """Promote when the held-out set has `min_eval` images, the accuracy gain is at least
    `min_improvement`, and wins - losses exceeds `z` standard deviations of a fair coin over
    the discordant images."""
    n = len(challenger_hits)
    wins = int(np.sum(challenger_hits & ~current_hits))
    losses = int(np.sum(~challenger_hits & current_hits))
    gain = (wins - losses) / n if n else 0.0
    margin = z * math.sqrt(wins + losses)
    if n < min_eval:
        why = f"only {n} held-out images (need {min_eval} to decide); label more images"
        return Decision(False, why, wins, losses)
    if wins - losses <= max(margin, 0) or gain < min_improvement:
        why = (
            f"not better beyond noise: {wins} held-out images won, {losses} lost "
            f"(needs > {margin:.1f} net and a gain >= {min_improvement})"
        )
        return Decision(False, why, wins, losses)
    return Decision(True, f"better: {wins} held-out images won, {losses} lost", wins, losses)
