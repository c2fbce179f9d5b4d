"""What the default run costs now that the fine-tune follows what it gains (issue 40, item 3).

    python -m benchmarks.finetune_cost [--baseline f843f9f] [--baseline-10k] [--skip-10k]

Side by side in one run, a default `emb run` with the code of this checkout and of `--baseline`
(a git worktree of that revision) on the user trial's folder (1,000 CIFAR-10 photos, 50 labeled
+ 50 unlabeled per class): wall seconds, each step's seconds and the accuracy on the unlabeled
half. Then a cold run over 10,000 labeled photos (the CIFAR-10 test folder, every image labeled
by its class folder), this checkout's code and, with `--baseline-10k`, the baseline's: the share
of `embedding_model`, and the classifier's accuracy on its held-out split (by content hash, the
same 2,031 images for both; no fine-tune trained on them). Goals: the user trial's folder in
<= 100 s; at 10,000 labels `embedding_model` <= 40 % of the cold run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import REPO, last_results, machine, require_cifar, write_results
from benchmarks.end_to_end_quality import build, emb_run, run_draw

GOAL_USER_S = 100.0
GOAL_SHARE = 0.40
SHOWN = ("embedding_model", "classifier", "projections", "embeddings")


def worktree(rev: str, tmp: Path) -> Path:
    """A checkout of `rev` (git worktree) to run the baseline's code."""
    path = tmp / f"code-{rev}"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-f", str(path), rev], cwd=REPO, check=True
    )
    return path


def _last_10k() -> list[dict]:
    return last_results("finetune_cost").get("labeled_10k", [])


def held_out_accuracy(data: Path) -> float | None:
    """The champion classifier's accuracy on its held-out split, from the run's catalog."""
    import duckdb

    with duckdb.connect(str(data / "catalog.duckdb"), read_only=True) as con:
        row = con.execute(
            "SELECT metrics FROM model_versions WHERE champion ORDER BY version_id DESC LIMIT 1"
        ).fetchone()
    if row is None:
        return None
    metrics = json.loads(row[0])
    return metrics.get(metrics.get("chosen"), {}).get("accuracy")


def run_10k(images: Path, data: Path, code: Path, name: str) -> dict:
    timed = emb_run(images, data, code)
    return {
        "code": name,
        "wall_s": timed.wall_s,
        "steps": timed.steps,
        "held_out_accuracy": held_out_accuracy(data),
    }


def report(rows: list[dict], bigs: list[dict]) -> str:
    lines = [
        "# The default run's cost, side by side with an earlier revision",
        "",
        f"Default `emb run`, a fresh data folder each, {machine()['cpus']} CPUs, one run after",
        "another on a quiet machine. The user trial's folder: 1,000 CIFAR-10 test photos, 50",
        "labeled + 50 unlabeled per class (`user_trial.sh 50`); accuracy on the unlabeled half.",
        "",
        "10,000 labeled: accuracy is the classifier's on its held-out split (2,031 images).",
        "",
        "| folder | code | wall s | " + " | ".join(f"{s} s" for s in SHOWN) + " | accuracy |",
        "|---|---|---:|" + "---:|" * len(SHOWN) + "---:|",
    ]
    for r in rows:
        cells = " | ".join(f"{r['steps'].get(s, 0):.1f}" for s in SHOWN)
        lines.append(
            f"| user trial | {r['code']} | {r['wall_s']:.0f} | {cells} | {r['accuracy']:.3f} |"
        )
    for big in bigs:
        cells = " | ".join(f"{big['steps'].get(s, 0):.1f}" for s in SHOWN)
        accuracy = big.get("held_out_accuracy")
        shown = "-" if accuracy is None else f"{accuracy:.3f}"
        lines.append(
            f"| 10,000 labeled | {big['code']} | {big['wall_s']:.0f} | {cells} | {shown} |"
        )
    lines.append("")
    new = rows[-1]
    verdict = "met" if new["wall_s"] <= GOAL_USER_S else "NOT met"
    lines.append(
        f"- User trial's folder <= {GOAL_USER_S:.0f} s: **{verdict}** ({new['wall_s']:.0f} s)"
    )
    if len(rows) > 1:
        old = rows[0]
        lines.append(
            f"- Against {old['code']}: {new['wall_s'] / old['wall_s']:.2f}x the wall time, "
            f"accuracy {new['accuracy'] - old['accuracy']:+.3f}"
        )
    for big in bigs:
        share = big["steps"].get("embedding_model", 0) / big["wall_s"]
        verdict = "met" if share <= GOAL_SHARE else "NOT met"
        lines.append(
            f"- 10,000 labels, {big['code']}: `embedding_model` <= {GOAL_SHARE:.0%} of the "
            "cold run: "
            f"**{verdict}** ({share:.0%}: {big['steps'].get('embedding_model', 0):.0f} s of "
            f"{big['wall_s']:.0f} s)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="f843f9f", help="revision to compare with")
    parser.add_argument(
        "--baseline-10k", action="store_true", help="also the baseline's cold 10,000-label run"
    )
    parser.add_argument(
        "--skip-10k",
        action="store_true",
        help="only the user trial's folder; the 10,000-label row of the last results stays, "
        "under the revision it was measured at",
    )
    args = parser.parse_args()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    rows, bigs = [], []
    with tempfile.TemporaryDirectory(prefix="finetune-cost-") as tmp:
        base = Path(tmp)
        try:
            codes = ((args.baseline, worktree(args.baseline, base)), (head, REPO))
            for name, code in codes:
                row = run_draw("user", 50, base / name, build, code)
                rows.append({"code": name, **row})
                print(rows[-1], flush=True)
            if args.skip_10k:
                bigs = _last_10k()
            else:
                for name, code in codes[0 if args.baseline_10k else 1 :]:
                    bigs.append(run_10k(require_cifar(), base / f"data-10k-{name}", code, name))
                    print(bigs[-1], flush=True)
        finally:
            subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=False)
    write_results("finetune_cost", {"rows": rows, "labeled_10k": bigs}, report(rows, bigs))


if __name__ == "__main__":
    main()
