"""benchmarks/domain_quality.py --keep: a run of some draws adds its rows to the results
instead of replacing them."""

from __future__ import annotations

from benchmarks.domain_quality import kept


def _row(domain: str, per: int, draw: str, accuracy: float) -> dict:
    return {"domain": domain, "per": per, "draw": draw, "accuracy": accuracy}


def test_kept_rows_are_merged_by_domain_labels_and_draw():
    rows = [_row("blood-cells", 40, "0", 0.91), _row("blood-cells", 40, "1", 0.92)]
    earlier = {"pool": 150, "rows": rows}
    fresh = [_row("blood-cells", 40, "1", 0.93), _row("blood-cells", 20, "3", 0.88)]
    merged = kept(fresh, 150, earlier)
    assert [(r["per"], r["draw"], r["accuracy"]) for r in merged] == [
        (20, "3", 0.88),
        (40, "0", 0.91),
        (40, "1", 0.93),
    ]
    assert kept(fresh, 100, earlier) == fresh, "another pool: other images, nothing kept"
    assert kept(fresh, 150, {}) == fresh, "no results yet"
