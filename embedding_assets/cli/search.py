"""`emb similar`, `emb search`, `emb serve` and `emb map`: search the published similarity
index or the image tags from a shell or HTTP, and open the map."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import typer

from embedding_assets.cli.console import catalog_db, fail, paths


def similar(
    query: str = typer.Argument(
        ..., help="An image file (embedded on the fly if not in the catalog) or a catalog image id."
    ),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="How many results."),
    format: str = typer.Option("table", "--format", "-f", help="table | json"),
    model_key: str = typer.Option(
        None, "--model-key", help="Embedding set to search (default: the current one)."
    ),
) -> None:
    """Find the images most similar to QUERY (cosine similarity), with label and cluster."""
    from embedding_assets.search.searcher import QueryError, Searcher

    if format not in ("table", "json"):
        fail(f"--format {format!r}: choose table or json")
    try:
        searcher = Searcher(catalog_db(), model_key)
        hits = searcher.similar(query, k)
    except (QueryError, LookupError, FileNotFoundError) as exc:
        fail(f"error: {exc}")
    if format == "json":
        payload = {
            "query": query,
            "model_key": searcher.model_key,
            "results": [h.as_dict() for h in hits],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    by_id = str(query).isdigit() and not Path(query).exists()  # as Searcher.similar decides
    shown = searcher.describe(int(query)) if by_id else query
    typer.echo(f"{len(hits)} images like {shown} (model key {searcher.model_key}):")
    typer.echo(f"{'rank':>4}  {'similarity':>10}  {'label':<12} {'cluster':>7}  path")
    for h in hits:
        cluster = "" if h.cluster is None else str(h.cluster)
        typer.echo(
            f"{h.rank:>4}  {h.similarity:>10.4f}  {h.label or '':<12} {cluster:>7}  {h.path}"
        )


def search(
    text: str = typer.Option(
        ..., "--text", "-t", help="Words to find images by, e.g. 'a red truck' or 'tabby cat'."
    ),
    k: int = typer.Option(10, "-k", "--k", min=1, max=100_000, help="How many results."),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
) -> None:
    """Find images by words. Offline: the words resolve through WordNet to the backbone's
    ImageNet classes; images whose own tags give those classes' probability answer, and so do
    the images that resemble them (their score spreads to each image's nearest neighbours):
    the `why` column names the matched tags, or the tagged images a hit resembles (`like #12`).
    Tags: `image_tags` (`emb run` makes them). With `emb run --text-model`, by CLIP instead.
    Exit code 1 when no image matched, 2 when no word names a class.

    Words are matched by the backbone's own ImageNet head (or a CLIP text model), which names
    things; `emb similar` uses the embedding trained on your images, which tells them apart:
    two models, so two model keys."""
    from embedding_assets.search.clip import ClipUnavailable
    from embedding_assets.search.text_answers import NoMatch
    from embedding_assets.search.text_search import search_text

    if format not in ("table", "csv", "json"):
        fail(f"--format {format!r}: choose table, csv or json")
    try:
        found = search_text(paths(), text, k)
    except (LookupError, FileNotFoundError, ClipUnavailable, NoMatch) as exc:
        fail(f"error: {exc}")
    if format == "json":
        typer.echo(json.dumps({"query": text, **found.as_dict()}, indent=2))
    elif format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["rank", "path", "image_id", "score", "classes", "matched_by", "like"])
        for h in found.hits:
            like = " ".join(str(i) for i in h.like)
            row = [h.rank, h.path, h.image_id, f"{h.score:.6f}", "; ".join(h.classes)]
            out.writerow([*row, h.matched_by, like])
    else:
        typer.secho(found.understood, err=True)
        typer.secho(f"answered by the {found.source} (see --help: why not the embedding)", err=True)
        if found.hits:
            typer.echo(f"{'rank':>4}  {'score':>6}  {'why':<32}  path")
        for h in found.hits:
            typer.echo(f"{h.rank:>4}  {h.score:>6.3f}  {_cut(h.why(), 32):<32}  {h.path}")
    if not found.hits:
        raise typer.Exit(1)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def serve(  # noqa: PLR0913 (typer options, like a Config's fields)
    host: str = typer.Option(
        "127.0.0.1",
        help="Interface to bind (0.0.0.0 exposes it; requests may then name any of the "
        "machine's IP addresses as Host).",
    ),
    port: int = typer.Option(8000, help="TCP port."),
    model_key: str = typer.Option(None, "--model-key", help="Embedding set to serve."),
    max_k: int = typer.Option(100, help="Largest k a request may ask for."),
    max_batch: int = typer.Option(256, help="Most queries in one /search/batch request."),
    max_upload_mb: float = typer.Option(10.0, help="Largest request body in MiB."),
    max_pixels: int = typer.Option(40_000_000, help="Largest uploaded image in pixels."),
    reload_seconds: float = typer.Option(
        1.0, help="How often to look for a newer published index (0: never)."
    ),
    access_log: bool = typer.Option(False, help="Log every request (costs throughput)."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="A line per request answered with an error (4xx, 5xx)."
    ),
    header_timeout: float = typer.Option(
        10.0,
        min=0.1,
        help="Seconds a connection has to send a request's headers (from connecting, or from "
        "the previous answer); a slower or idle client is disconnected.",
    ),
    workers: int = typer.Option(
        0, min=0, help="Server processes, each with the index in memory (0: one per CPU, max 4)."
    ),
    allowed_host: list[str] = typer.Option(
        [],
        "--allowed-host",
        metavar="NAME",
        help="Another host name requests may use in their Host header (repeatable), besides "
        "127.0.0.1, localhost, ::1 and --host: the name a proxy or your LAN knows it by. Any "
        "other Host is refused (400), so a DNS-rebound page gets nothing.",
    ),
) -> None:
    """Serve `/search` (by image id, uploaded image or text), `/search/batch` and `/health` over
    HTTP; the OpenAPI page is at /docs. Newly published indexes are picked up while serving."""
    from embedding_assets.web.guards import split_host

    names = []
    for name in allowed_host:
        parsed = split_host(name.strip())
        if parsed is None or parsed[1] is not None or "/" in name:
            fail(
                f"--allowed-host {name!r}: give a host name or address such as "
                "labels.example or 192.168.1.20 (no scheme, port or path)"
            )
        names.append(parsed[0])

    options = {
        "db_path": str(catalog_db()),
        "model_key": model_key,
        "max_k": max_k,
        "max_batch": max_batch,
        "max_upload_bytes": int(max_upload_mb * 2**20),
        "max_pixels": max_pixels,
        "reload_seconds": reload_seconds,
        "host": host,
        "allowed_hosts": names,
    }
    from embedding_assets.web.slow_clients import HEAD_TIMEOUT_ENV

    os.environ[HEAD_TIMEOUT_ENV] = str(header_timeout)  # read by each worker's connections
    workers = workers or min(os.cpu_count() or 1, 4)
    for line in serve_lines(host, port, workers):
        typer.echo(line)
    _run_server(options, port, workers, "all" if access_log else "errors" if verbose else "")
    typer.echo("emb serve stopped.")


def serve_lines(host: str, port: int, workers: int) -> list[str]:
    """What `emb serve` says before serving: the address of each page, and where the token
    that lets the pages write labels comes from."""
    from embedding_assets.web.pages import TOKEN_ENV, TOKEN_FILE, TOKEN_HEADER

    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    pages = [
        ("search", "/search/page", "by image, id or words"),
        ("label", "/label", "answer the label queue"),
        ("map", "/map", "2-D map, lasso to label"),
        ("atlas", "/atlas/", "Embedding Atlas"),
        ("API", "/docs", "HTTP search for programs (OpenAPI)"),
    ]
    token = (
        f"${TOKEN_ENV}"
        if os.environ.get(TOKEN_ENV, "").strip()
        else f"{paths().root / TOKEN_FILE} (made on first start; delete it to rotate)"
    )
    return [
        f"emb serve on {base} ({workers} worker{'s' if workers > 1 else ''}; Ctrl+C stops it)",
        *[f"  {name:<7} {base}{path:<14} {what}" for name, path, what in pages],
        f"Write token from {token}: the pages carry it; scripts send it as {TOKEN_HEADER}",
    ]


def _run_server(options: dict, port: int, workers: int, requests: str = "") -> None:
    """uvicorn over `web.api.create_app(**options)` (worker processes read the options from
    the environment); `requests`: "all" logs every request, "errors" those answered 4xx/5xx."""
    import uvicorn

    from embedding_assets.web.api import SERVE_CONFIG_ENV, SUPERVISOR_ENV
    from embedding_assets.web.request_log import log_config
    from embedding_assets.web.slow_clients import PROTOCOL

    os.environ[SERVE_CONFIG_ENV] = json.dumps(options)
    os.environ[SUPERVISOR_ENV] = str(os.getpid())  # its workers end when it is gone
    uvicorn.run(
        "embedding_assets.web.api:app_from_env",
        factory=True,
        host=options["host"],
        port=port,
        workers=workers,
        access_log=bool(requests),
        log_config=log_config(errors_only=requests == "errors"),
        log_level=None,  # the levels are log_config's
        http=PROTOCOL,  # a deadline for each request's headers (slow or idle clients)
    )


def map_command(
    port: int = typer.Option(8000, help="TCP port (on 127.0.0.1)."),
) -> None:
    """Open the current embeddings in Embedding Atlas: density map, cluster names, charts that
    cross-filter over labels, predictions and curation flags, nearest neighbours. Serves
    `emb serve`'s pages on 127.0.0.1 and prints the /atlas address; the lasso that labels a
    region is on /map."""
    from embedding_assets.web.atlas import INSTALL, viewer_dir

    if viewer_dir() is None:
        fail(f"the Embedding Atlas viewer is not installed: {INSTALL}")
    if not paths().map_points.is_file():
        fail("no map export yet: run `emb run` (it materializes `map_export`) first")
    typer.echo(f"Embedding Atlas: http://127.0.0.1:{port}/atlas/ (lasso to label: /map; Ctrl+C)")
    _run_server({"db_path": str(catalog_db()), "host": "127.0.0.1"}, port, 1)
    typer.echo("emb map stopped.")
