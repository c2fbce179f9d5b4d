"""The /map page of `emb serve` with 100k points in headless Chromium: time to first render and
frame times while panning.

    python -m benchmarks.map_page [--points 100000] [--runs 3]

A synthetic catalog (images, one embedding set, a PCA projection in 12 blobs, clusters, anomaly
scores, predictions, a fifth of the images labeled) is written with the platform's own schema;
the real app (`create_app`) serves it from a uvicorn server in this process on 127.0.0.1, and
Debian's chromium (headless, WebGL drawn by SwiftShader on the CPU: no GPU here) opens /map.

- first render: from navigation start to the end of the first Plotly draw of all points
  (the page's `embMap.rendered`, a performance.now() timestamp), including the /map/data read;
- pan (drag): the page in pan mode, the mouse dragged across the plot for ~2 s; frames are the
  requestAnimationFrame callbacks during the drag (fps = frames / drag time, and the 95th
  percentile gap between them);
- pan (relayout): 60 pan steps, each a Plotly.relayout of the axis ranges followed by the next
  animation frame: the full redraw cost per step.

Goals (issue 16): first render < 3 s, panning >= 30 fps.
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

    from embedding_assets.web.api import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(db, reload_seconds=0), host="127.0.0.1", port=port, log_level="warning"
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


def measure(page, url: str) -> dict:
    page.goto(f"{url}/map")
    page.wait_for_function("window.embMap && window.embMap.rendered !== null", timeout=120_000)
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
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
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
    relayout = page.evaluate(RELAYOUT_JS, 60)
    return {
        "points": n,
        "webgl_renderer": gl,
        "first_render_s": round(first_ms / 1000, 3),
        "map_data_s": round(data[0] / 1000, 3) if data else None,
        "map_data_bytes": data[1] if data else None,
        "drag_mouse_moves": moves,
        "drag_fps": round((len(frames) - 1) / span_s, 1) if gaps else None,
        "drag_frame_ms_median": round(statistics.median(gaps), 1) if gaps else None,
        "drag_frame_ms_p95": round(sorted(gaps)[int(0.95 * (len(gaps) - 1))], 1) if gaps else None,
        "relayout_frame_ms_median": round(statistics.median(relayout), 1),
        "relayout_frame_ms_p95": round(sorted(relayout)[int(0.95 * (len(relayout) - 1))], 1),
        "relayout_fps": round(1000 / statistics.mean(relayout), 1),
    }


def measure_points(tmp: Path, executable: str, points: int, runs: int) -> tuple[list, float]:
    """`runs` page loads of a fresh synthetic catalog of `points` points."""
    from playwright.sync_api import sync_playwright

    db = tmp / "data" / "catalog.duckdb"
    started = time.perf_counter()
    synthetic_catalog(db, points)
    setup_s = time.perf_counter() - started
    url, server = serve(db)
    found = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            for _ in range(runs):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                found.append(measure(page, url))
                page.close()
            browser.close()
    finally:
        server.should_exit = True
    return found, setup_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="page loads (the median is kept)")
    parser.add_argument(
        "--floor-points", type=int, default=1000, help="a small map for the fixed cost per frame"
    )
    args = parser.parse_args()

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("no chromium found (apt-get install chromium)")
    tmp = Path(tempfile.mkdtemp(prefix="map_page_"))
    try:
        runs, setup_s = measure_points(tmp / "main", executable, args.points, args.runs)
        floor, _ = measure_points(tmp / "floor", executable, args.floor_points, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    numeric = [k for k, v in runs[0].items() if isinstance(v, int | float) and k != "points"]
    median = {
        k: round(statistics.median(float(r[k]) for r in runs), 3)
        for k in numeric
        if all(isinstance(r[k], int | float) for r in runs)
    }
    results = {
        "machine": {**machine(), "load_average_1m": round(os.getloadavg()[0], 2)},
        "points": args.points,
        "runs": runs,
        "median": median,
        "floor": floor[0],
        "catalog_setup_s": round(setup_s, 2),
        "goals": {"first_render_s": GOAL_FIRST_RENDER_S, "fps": GOAL_FPS},
        "met": {
            "first_render": median["first_render_s"] < GOAL_FIRST_RENDER_S,
            "pan_drag": (median.get("drag_fps") or 0) >= GOAL_FPS,
            "pan_relayout": median["relayout_fps"] >= GOAL_FPS,
        },
    }
    write_results("map_page", results, markdown(results))


def markdown(r: dict) -> str:
    m, first, fl = r["median"], r["runs"][0], r["floor"]
    ok = {True: "yes", False: "**no**"}
    lines = [
        "# Map page (`/map` of `emb serve`)",
        "",
        f"Machine: {r['machine']} (a shared machine: the load average is other users' work "
        f"too). {r['points']:,} synthetic points (12 blobs), headless "
        f"Chromium, WebGL renderer: {first['webgl_renderer']}. Median of {len(r['runs'])} page "
        "loads. `python -m benchmarks.map_page`.",
        "",
        "| measure | value | goal | met |",
        "|---|---:|---:|---|",
        f"| first render (navigation → all points drawn) | {m['first_render_s']:.2f} s | "
        f"< {GOAL_FIRST_RENDER_S:g} s | {ok[r['met']['first_render']]} |",
        f"| of which /map/data ({first['map_data_bytes'] or 0:,} bytes) | "
        f"{m.get('map_data_s') or 0:.2f} s | | |",
        f"| pan by mouse drag: frames/s | {m['drag_fps']:.1f} | >= {GOAL_FPS:g} | "
        f"{ok[r['met']['pan_drag']]} |",
        f"| pan by mouse drag: frame gap median / p95 | {m['drag_frame_ms_median']:.1f} / "
        f"{m['drag_frame_ms_p95']:.1f} ms | | |",
        f"| pan step by Plotly.relayout + next frame: median / p95 | "
        f"{m['relayout_frame_ms_median']:.1f} / {m['relayout_frame_ms_p95']:.1f} ms "
        f"({m['relayout_fps']:.1f} steps/s) | >= {GOAL_FPS:g}/s | "
        f"{ok[r['met']['pan_relayout']]} |",
        "",
        f"Same page with {fl['points']:,} points (the cost per frame that does not grow with "
        f"the points): first render {fl['first_render_s']:.2f} s, drag {fl['drag_fps']:.1f} "
        f"frames/s, relayout step {fl['relayout_frame_ms_median']:.1f} ms median.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
