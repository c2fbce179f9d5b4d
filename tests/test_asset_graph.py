"""The asset graph as a snapshot (keys, deps, groups, checks, automation, external),
so a structural change shows up in review as a diff of tests/snapshots/asset_graph.json.

After a deliberate change: `UPDATE_SNAPSHOTS=1 pytest tests/test_asset_graph.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def graph_shape() -> dict:
    from embedding_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    shape = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        checks = [graph.get_check_spec(c) for c in node.check_keys]
        shape[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "group": node.group_name,
            "external": not node.is_materializable,
            "automation": node.automation_condition is not None,
            "checks": {c.name: {"blocking": c.blocking} for c in checks},
        }
    return shape


def test_asset_graph_matches_the_snapshot():
    shape = graph_shape()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(shape, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert shape == expected, (
        "the asset graph changed; if that is deliberate, run "
        "UPDATE_SNAPSHOTS=1 pytest tests/test_asset_graph.py and commit the snapshot"
    )
