"""The two map pages of `emb serve` side by side in headless Chromium: /map (plotly WebGL,
written for this project) and /atlas (Apple's Embedding Atlas over the map export), at 10k,
100k and 1M points: time to first render and frame times while panning.

    python -m benchmarks.map_page [--sizes 10000 100000 1000000] [--runs 2]

A synthetic catalog per size (images, one embedding set, a PCA projection in 12 blobs,
clusters, anomaly scores, predictions, a fifth of the images labeled) is written with the
platform's own schema, and its map export (analytics/map_export.py, without neighbours: the
vectors are synthetic) beside it; the real app (`create_app`) serves both pages from a uvicorn
server in this process on 127.0.0.1, and Debian's chromium opens them (headless; WebGL drawn by
SwiftShader on the CPU, no GPU here; Embedding Atlas falls back from WebGPU to WebGL 2).

- first render: navigation start → all points drawn: /map's `embMap.rendered` (the end of the
  first Plotly draw, /map/data read included); /atlas's "N / N points" status, shown once
  DuckDB-WASM has loaded the Parquet file and the view has its points;
- pan (drag): the mouse dragged across the plot for ~2 s; frames are the
  requestAnimationFrame callbacks during the drag (fps = frames / drag time, and the 95th
  percentile gap between them). /map is put in pan mode first; the Atlas pans on a drag.

Goals (issue 16): first render < 3 s, panning >= 30 fps. Issue 26: the faster-to-use page is
the default map.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import machine, write_results
from resources.duckdb_store import connect

GOAL_FIRST_RENDER_S = 3.0
GOAL_FPS = 30.0
LOAD_TIMEOUT_MS = 600_000  # 1M points on a software renderer
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


def synthetic_catalog(db: Path, n: int) -> None:
    """n images with a PCA map in 12 gaussian blobs and everything the map colours by."""
    with connect(db) as con:
        con.execute("SELECT setseed(0.42)")
        con.execute(
            "INSERT INTO images (image_id, path, root, status, first_seen, last_seen) "
            "SELECT i, '/nonexistent/img_' || i || '.png', '/nonexistent', 'ok', now(), now() "
            "FROM range(1, ? + 1) t(i)",
            [n],
        )
        con.execute(
            "INSERT INTO embedding_sets VALUES ('synthetic-map', 'synthetic', NULL, 8, ?, "
            "'none.parquet', NULL, now())",
            [n],
        )
        con.execute(
            "CREATE TEMP TABLE pts AS SELECT image_id, (image_id % 12)::INTEGER AS blob, "
            "random() AS u1, random() AS u2, random() AS u3 FROM images"
        )
        # Box-Muller gaussians around 12 centres on a circle
        con.execute(
            """INSERT INTO projections SELECT image_id, 'synthetic-map', 'pca',
                 (5 * cos(blob * pi() / 6) + sqrt(-2 * ln(u1 + 1e-12)) * cos(2 * pi() * u2))::FLOAT,
                 (5 * sin(blob * pi() / 6) + sqrt(-2 * ln(u1 + 1e-12)) * sin(2 * pi() * u2))::FLOAT
               FROM pts"""
        )
        con.execute("INSERT INTO clusters SELECT image_id, 'synthetic-map', blob FROM pts")
        con.execute(
            "INSERT INTO anomaly_scores SELECT image_id, 'synthetic-map', u3::FLOAT, u3 > 0.95 "
            "FROM pts"
        )
        con.execute(
            "INSERT INTO labels (image_id, label, source) SELECT image_id, "
            "'class_' || (blob % 10), 'bench' FROM pts WHERE u3 < 0.2"
        )
        con.execute(
            "INSERT INTO predictions SELECT image_id, 1, 'class_' || (blob % 10), 0.5 + u3 / 2, "
            "0.5 - u3 / 2, u3, 0.5, now() FROM pts"
        )


def serve(db: Path):
    """The real app on a free port in a thread; returns (url, server)."""
    import socket

    import uvicorn

    from embedding_assets.web.api import ServeOptions, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(db, ServeOptions(reload_seconds=0)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


FRAMES_JS = """() => { window.__frames = []; window.__recording = true;
  const tick = (t) => { if (!window.__recording) return; window.__frames.push(t);
                        requestAnimationFrame(tick); };
  requestAnimationFrame(tick); }"""

RELAYOUT_JS = """async (steps) => {
  const gd = document.getElementById('plot'), L = gd._fullLayout;
  const [x0, x1] = L.xaxis.range, [y0, y1] = L.yaxis.range, w = (x1 - x0), times = [];
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  await frame();
  for (let i = 1; i <= steps; i++) {
    const dx = w * 0.01 * i, t = performance.now();
    await Plotly.relayout(gd, {'xaxis.range': [x0 + dx, x1 + dx], 'yaxis.range': [y0, y1]});
    await frame();
    times.push(performance.now() - t);
  }
  return times; }"""


def drag(page, cx: float, cy: float) -> dict:
    """Frames while the mouse drags from the centre of the plot for ~2 s."""
    page.mouse.move(cx, cy)
    page.evaluate(FRAMES_JS)
    page.mouse.down()
    started = time.perf_counter()
    moves = 0
    while time.perf_counter() - started < 2.0:
        moves += 1
        dx = 200 * ((moves % 40) / 40 - 0.5)
        page.mouse.move(cx + dx, cy + dx / 3)
        page.wait_for_timeout(8)
    page.mouse.up()
    frames = page.evaluate("window.__recording = false, window.__frames")
    gaps = [b - a for a, b in zip(frames, frames[1:], strict=False)]
    span_s = (frames[-1] - frames[0]) / 1000 if len(frames) > 1 else float("nan")
    return {
        "drag_mouse_moves": moves,
        "drag_fps": round((len(frames) - 1) / span_s, 1) if gaps else None,
        "drag_frame_ms_median": round(statistics.median(gaps), 1) if gaps else None,
        "drag_frame_ms_p95": round(sorted(gaps)[int(0.95 * (len(gaps) - 1))], 1) if gaps else None,
    }


def measure_atlas(page, url: str, n: int) -> dict:
    page.goto(f"{url}/atlas/pca/")
    page.get_by_text(f"{n:,} / {n:,} points").or_(page.get_by_text(f"{n} / {n} points")).wait_for(
        timeout=LOAD_TIMEOUT_MS
    )
    first_ms = page.evaluate("performance.now()")
    data = page.evaluate(
        "performance.getEntriesByType('resource').filter(e => e.name.includes('dataset.parquet'))"
        ".map(e => [e.duration, e.encodedBodySize || e.transferSize])[0]"
    )
    page.wait_for_timeout(500)
    box = max(
        (
            page.locator("canvas").nth(i).bounding_box()
            for i in range(page.locator("canvas").count())
        ),
        key=lambda b: (b or {"width": 0})["width"] * (b or {"height": 0})["height"],
    )
    found = drag(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    return {
        "points": n,
        "first_render_s": round(first_ms / 1000, 3),
        "data_s": round(data[0] / 1000, 3) if data else None,
        "data_bytes": data[1] if data else None,
        **found,
    }


def measure_map(page, url: str) -> dict:
    page.goto(f"{url}/map")
    page.wait_for_function(
        "window.embMap && window.embMap.rendered !== null", timeout=LOAD_TIMEOUT_MS
    )
    first_ms = page.evaluate("embMap.rendered")
    data = page.evaluate(
        "performance.getEntriesByType('resource').filter(e => e.name.includes('/map/data'))"
        ".map(e => [e.duration, e.encodedBodySize || e.transferSize])[0]"
    )
    n = page.evaluate("embMap.data.n")
    gl = page.evaluate(
        "(() => { const c = document.createElement('canvas').getContext('webgl'); "
        "if (!c) return null; const e = c.getExtension('WEBGL_debug_renderer_info'); "
        "return e ? c.getParameter(e.UNMASKED_RENDERER_WEBGL) : c.getParameter(c.RENDERER); })()"
    )
    page.evaluate("Plotly.relayout('plot', {dragmode: 'pan'})")
    page.wait_for_timeout(300)
    box = page.locator(".nsewdrag").bounding_box()
    found = drag(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    relayout = page.evaluate(RELAYOUT_JS, 60)
    return {
        "points": n,
        "webgl_renderer": gl,
        "first_render_s": round(first_ms / 1000, 3),
        "data_s": round(data[0] / 1000, 3) if data else None,
        "data_bytes": data[1] if data else None,
        **found,
        "relayout_frame_ms_median": round(statistics.median(relayout), 1),
        "relayout_fps": round(1000 / statistics.mean(relayout), 1),
    }


def measure_size(tmp: Path, executable: str, points: int, runs: int) -> dict:
    """`runs` page loads of each page over a fresh synthetic catalog of `points` points."""
    import pyarrow.parquet as pq
    from playwright.sync_api import sync_playwright

    from embedding_assets.analytics.map_export import read_points
    from resources.paths import DataPaths

    paths = DataPaths(tmp / "data")
    started = time.perf_counter()
    synthetic_catalog(paths.catalog_db, points)
    pq.write_table(read_points(paths.catalog_db)[1], paths.map_points, compression="zstd")
    setup_s = time.perf_counter() - started
    url, server = serve(paths.catalog_db)
    found: dict[str, list] = {"map": [], "atlas": []}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            for _ in range(runs):
                for name in found:  # interleaved: the machine's load falls on both alike
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.set_default_timeout(LOAD_TIMEOUT_MS)
                    measured = (
                        measure_map(page, url)
                        if name == "map"
                        else measure_atlas(page, url, points)
                    )
                    found[name].append(measured)
                    print(f"{points:>9,} {name:5} {measured}", flush=True)
                    page.close()
            browser.close()
    finally:
        server.should_exit = True
    return {
        "points": points,
        "setup_s": round(setup_s, 1),
        "runs": found,
        "median": {name: _median(rows) for name, rows in found.items()},
    }


def _median(rows: list[dict]) -> dict:
    keys = [k for k, v in rows[0].items() if isinstance(v, int | float)]
    return {
        k: round(statistics.median(float(r[k]) for r in rows), 3)
        for k in keys
        if all(isinstance(r[k], int | float) for r in rows)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=2, help="page loads per page and size")
    args = parser.parse_args()

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("no chromium found (apt-get install chromium)")
    tmp = Path(tempfile.mkdtemp(prefix="map_page_"))
    try:
        sizes = [
            measure_size(tmp / str(n), executable, n, args.runs if n < 1_000_000 else 1)
            for n in args.sizes
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {
        "machine": {**machine(), "load_average_1m": round(os.getloadavg()[0], 2)},
        "webgl_renderer": sizes[0]["runs"]["map"][0]["webgl_renderer"],
        "sizes": sizes,
        "goals": {"first_render_s": GOAL_FIRST_RENDER_S, "fps": GOAL_FPS},
    }
    write_results("map_page", results, markdown(results))


def markdown(r: dict) -> str:
    ok = {True: "yes", False: "**no**"}
    lines = [
        "# Map pages (`/map` and `/atlas` of `emb serve`)",
        "",
        f"Machine: {r['machine']} (a shared machine: the load average is other users' work "
        "too). Synthetic points (12 blobs), headless Chromium, WebGL renderer: "
        f"{r['webgl_renderer']}. Median of the page loads (interleaved; one at 1M). "
        "`python -m benchmarks.map_page`.",
        "",
        f"Goals: first render < {GOAL_FIRST_RENDER_S:g} s, panning >= {GOAL_FPS:g} frames/s.",
        "",
        "| points | page | first render | data (bytes) | pan: frames/s | frame gap median / p95 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size in r["sizes"]:
        for name, label in (("map", "/map (plotly)"), ("atlas", "/atlas (Embedding Atlas)")):
            m, first = size["median"][name], size["runs"][name][0]
            data = (
                f"{m['data_s']:.2f} s ({first['data_bytes']:,})"
                if "data_s" in m
                else "— (read in DuckDB-WASM's worker)"
            )
            lines.append(
                f"| {size['points']:,} | {label} | {m['first_render_s']:.2f} s "
                f"({ok[m['first_render_s'] < GOAL_FIRST_RENDER_S]}) | {data} | "
                f"{m['drag_fps']:.1f} ({ok[m['drag_fps'] >= GOAL_FPS]}) | "
                f"{m['drag_frame_ms_median']:.1f} / {m['drag_frame_ms_p95']:.1f} ms |"
            )
    faster = [
        size["points"]
        for size in r["sizes"]
        if size["median"]["map"]["first_render_s"] < size["median"]["atlas"]["first_render_s"]
    ]
    sizes = ", ".join(f"{size['points']:,}" for size in r["sizes"])
    lines += [
        "",
        f"/map draws first sooner at {', '.join(f'{n:,}' for n in faster) or 'no size'} points "
        f"of {sizes}; which page is the default map, "
        'and why, is in the README ("Label and explore in the browser").',
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
