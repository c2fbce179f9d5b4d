"""`/docs` of `emb serve`: the API described from its own OpenAPI schema on one static page,
with nothing loaded from outside. FastAPI's Swagger UI loads its script and styles from a
public CDN, so offline (where this platform runs by default) it was a blank page."""

from __future__ import annotations

import html


def docs_html(schema: dict) -> str:
    """Every operation (method, path, summary, parameters, body) as a table row; the full
    schema is one link away (`/openapi.json`)."""
    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            params = [
                f"{p['name']}{'' if p.get('required') else '?'} ({p.get('in', '')})"
                for p in op.get("parameters", [])
            ]
            if "requestBody" in op:
                kinds = ", ".join(op["requestBody"].get("content", {}))
                params.append(f"body: {kinds}")
            said = op.get("description") or op.get("summary") or ""
            rows.append(
                f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(said)}</td><td>{html.escape('; '.join(params))}</td></tr>"
            )
    info = schema.get("info", {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(info.get("title", "API"))}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 16px; color: #222; }}
td {{ border-top: 1px solid #ddd; padding: 4px 8px; vertical-align: top; font-size: 14px; }}
code {{ white-space: nowrap; }}</style></head>
<body><h2>{html.escape(info.get("title", "API"))}</h2>
<p>{html.escape(info.get("description", ""))}</p>
<p>The whole schema, for code generators and API clients: <a href="/openapi.json">/openapi.json</a>.
Pages: <a href="/label">/label</a>, <a href="/map">/map</a>, <a href="/atlas/">/atlas/</a>,
<a href="/search/page">/search/page</a>.</p>
<table><tr><th>method</th><th>path</th><th>what</th><th>parameters (? optional)</th></tr>
{"".join(rows)}
</table></body></html>"""
