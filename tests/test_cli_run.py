"""`emb run` and `emb demo` as a user runs them: options and a run-config file reach the job,
the output is a summary rather than Dagster's log (unless --verbose), failures are one line
each, and a second run over the same images embeds nothing."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from embedding_assets import definitions
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.cli.app import app
from embedding_assets.cli.console import emb_command
from embedding_assets.common import progress
from embedding_assets.embedding.defaults import DEFAULT_MODEL
from resources.paths import DataPaths
from tests.e2e_setup import write_small_digits
from tests.helpers import write_image

runner = CliRunner()
SMALL = ["--model", "resnet18", "--weights", "none", "--image-size", "32"]


@pytest.fixture(autouse=True)
def definitions_on_this_data_dir(data_dir: Path) -> None:
    """The definitions bind the data directory when imported, once per `emb` process; these
    tests run many `emb` commands in one process, each on its own data directory."""
    importlib.reload(definitions)


def _emb(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    assert "Traceback" not in res.output, res.output
    return res.exit_code, res.output


def _latest_run_config() -> dict:
    with dg.DagsterInstance.get() as instance:
        return instance.get_runs(limit=1)[0].run_config


def _embeddings_metadata() -> dict:
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("embeddings"))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_options_and_config_file_reach_the_run_quietly(
    data_dir: Path, labeled_folder: Path, tmp_path: Path
):
    config = tmp_path / "run.yaml"
    config.write_text(
        "ops:\n"
        "  embeddings: {config: {model: efficientnet_lite0, batch_size: 8}}\n"
        "  projections: {config: {methods: [pca]}}\n"
    )
    code, out = _emb("run", "--image-dir", str(labeled_folder), "--config", str(config), *SMALL)
    assert code == 0, out
    assert "DEBUG" not in out and " - dagster - " not in out
    assert "succeeded" in out and "28 in the catalog (28 usable), 28 new this run" in out
    assert "embedded now" in out and "from cache" in out
    assert "Seconds     image_catalog" in out and "projections" in out
    assert str(data_dir / "catalog.duckdb") in out and "emb sql" in out and "emb ui" in out
    labels = re.search(
        r"Labels classifier v1 \((\w+)\): accuracy (\S+), macro-F1 (\S+) \((\d+)-fold cv, "
        r"24 labels\), the champion now; label the 1 image `(\S+) queue` lists next",
        " ".join(out.split()),
    )
    assert labels and labels[5] == emb_command(), out

    ops = _latest_run_config()["ops"]
    backbone = {"model": "resnet18", "weights": "none", "image_size": 32}
    assert ops["embeddings"]["config"] == {**backbone, "batch_size": 8}, "flags override the file"
    assert ops["embedding_model"]["config"] == backbone
    assert ops["projections"]["config"] == {"methods": ["pca"]}
    assert _embeddings_metadata()["model_key"].startswith("resnet18-none-")

    first_runs = re.search(r"Runs (\S+) \(image_catalog\) and (\S+) \(the rest\) succeeded", out)
    assert first_runs, out
    with dg.DagsterInstance.get() as instance:
        assert [r.run_id for r in instance.get_runs(limit=2)] == list(first_runs.groups())[::-1]

    args = ["run", "--image-dir", str(labeled_folder), "--config", str(config), *SMALL]
    code, out = _emb(*args)
    assert code == 0, out
    assert "0 new this run" in out and "Embeddings" not in out
    flat = " ".join(out.split())
    assert f"Up to date nothing changed since run {first_runs[2]} at " in flat, out
    assert f"assets not run; {emb_command()} run --full checks every asset anyway" in flat, out

    code, out = _emb(*args, "--full")
    assert code == 0, out
    assert "0 new this run" in out and "0 embedded now" in out and "Up to date" not in out
    assert _embeddings_metadata()["embedded_now"] == 0


def test_verbose_shows_dagster_log_lines(data_dir: Path, labeled_folder: Path, tmp_path: Path):
    config = tmp_path / "run.yaml"
    config.write_text("ops: {projections: {config: {methods: [pca]}}}\n")
    code, out = _emb(
        "run", "--image-dir", str(labeled_folder), "--config", str(config), *SMALL, "--verbose"
    )
    assert code == 0, out
    assert " - dagster - DEBUG - " in out and "STEP_SUCCESS" in out
    assert "embedded now" in out, "the summary closes verbose output too"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("ops: [\n", "not valid YAML"),
        ("- a\n- b\n", "holds a list, not a mapping"),
        ("ops: {embedings: {config: {model: x}}}\n", 'entry "embedings"'),
        ("ops: {embeddings: {config: {modle: x}}}\n", "allowed there: allow_download"),
        ("ops: {embeddings: {config: {image_size: big}}}\n", "image_size"),
        (
            "ops: {embeddings: {config: {precision: fp8}}}\n",
            "got fp8; allowed there: auto, fp32, bf16, fp16",
        ),
        ("ops: {projections: {config: {methods: [pca, mds]}}}\n", "allowed there: pca, umap, tsne"),
        (
            "ops: {embeddings: {config: {threads: -1}}}\n",
            "ops.embeddings.config.threads is -1; input should be greater than or equal to 0.",
        ),
        (
            "ops: {embeddings: {config: {batch_size: 0}}}\n",
            "ops.embeddings.config.batch_size is 0; input should be greater than or equal to 1.",
        ),
        (
            "ops: {image_tags: {config: {top_k: 100}}}\n",
            "ops.image_tags.config.top_k is 100; input should be less than or equal to 50.",
        ),
    ],
)
def test_bad_config_file_is_one_line(
    data_dir: Path, labeled_folder: Path, tmp_path: Path, content: str | None, expected: str
):
    config = tmp_path / "bad.yaml"
    if content is not None:
        config.write_text(content)
    code, out = _emb("run", "--image-dir", str(labeled_folder), "--config", str(config))
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{config}: ") and expected in lines[0], out
    with dg.DagsterInstance.get() as instance:
        assert not instance.get_runs(), "refused before any run"


def test_failed_check_and_failed_step_are_one_line_each(
    data_dir: Path, labeled_folder: Path, tmp_path: Path
):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_text("not an image")
    code, out = _emb("run", "--image-dir", str(bad))
    assert code == 1 and "FAILED" in out
    assert "check image_catalog/catalog_has_usable_images failed: No usable image" in out, out
    assert "steps did not run" in out

    code, out = _emb("run", "--image-dir", str(labeled_folder), "--model", "no_such_model")
    assert code == 1 and "FAILED" in out
    failed = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(failed) == 1 and "embedding_model failed: ValueError" in failed[0], out
    assert "no_such_model" in failed[0]


def test_a_folder_with_no_labels_runs_and_asks_for_the_first_labels(data_dir: Path, tmp_path: Path):
    """Most users start with photos and no labels, and some bad files among them: the run
    succeeds, counts the bad files by reason, and says which images to label first."""
    folder = tmp_path / "photos"
    for i in range(12):
        write_image(folder / "unlabeled" / f"p{i}.png", size=(24, 24), seed=i)
    (folder / "unlabeled" / "broken.png").write_text("not an image")
    (folder / "unlabeled" / "phone.heic").write_bytes(b"\0" * 64)
    code, out = _emb("run", "--image-dir", str(folder), *SMALL)
    assert code == 0, out
    assert "steps did not run" not in out and "failed" not in out, out
    flat = " ".join(out.split())
    assert "14 in the catalog (12 usable)" in flat
    assert f"Bad files 1 corrupt, 1 unsupported list them: {emb_command()} sql" in flat, out
    assert f"Folder {folder.resolve()}" in flat, out
    assert "Labels the classifier waits for 2+ classes with 2+ labeled images each; label " in flat
    assert f"the 12 images `{emb_command()} queue` lists first" in flat, out
    assert "promotion_gate" not in out, "the Labels line says it, once"
    queue = runner.invoke(app, ["queue", "--format", "json"])
    assert queue.exit_code == 0 and len(json.loads(queue.output)) == 12


def test_a_folder_without_images_is_refused_before_any_run(data_dir: Path, tmp_path: Path):
    empty, texts, photos = tmp_path / "empty", tmp_path / "texts", tmp_path / "photos"
    empty.mkdir()
    (texts / "notes").mkdir(parents=True)
    (texts / "notes" / "a.txt").write_text("x")
    (texts / "b.csv").write_text("x")
    for i in range(3):
        write_image(photos / f"{i}.png", seed=i)
    scan_catalog(DataPaths(data_dir).catalog_db, photos)
    for folder, what in ((empty, "no files"), (texts, "2 other files")):
        code, out = _emb("run", "--image-dir", str(folder))
        assert code == 2 and len(out.strip().splitlines()) == 1, out
        assert out.startswith(f"--image-dir {folder}: no image files there ({what}; read: .bmp")
        assert "the catalog is unchanged (it holds 3 usable images from earlier runs)" in out
    missing = tmp_path / "does" / "not" / "exist"
    code, out = _emb("run", "--image-dir", str(missing))
    assert code == 2 and out.strip() == (
        f"--image-dir {missing}: no such folder; check the path (nothing ran)"
    )
    code, out = _emb("run", "--image-dir", str(photos / "0.png"))
    assert code == 2 and "a file, not a folder" in out
    config = tmp_path / "run.yaml"
    config.write_text(f"ops: {{image_catalog: {{config: {{image_dir: {empty}}}}}}}\n")
    code, out = _emb("run", "--config", str(config))
    assert code == 2 and out.startswith(f"image_dir in {config} {empty}: no image files"), out
    with dg.DagsterInstance.get() as instance:
        assert not instance.get_runs(), "refused before any run"


def test_run_after_demo_embeds_nothing(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The demo runs with `emb run`'s defaults (the default pretrained backbone), so `emb run`
    on the demo folder afterwards finds every vector in the cache. 24 digits stand in for the
    1,797 of the real demo."""

    def few_digits(folder: Path, labeled_fraction: float) -> dict[str, int]:
        hidden = write_small_digits(folder, n=24, labeled_fraction=labeled_fraction)
        return {"images": 24, "labeled": 24 - len(hidden)}

    monkeypatch.setattr("embedding_assets.cli.demo.write_demo_images", few_digits)
    code, out = _emb("demo", "--labeled-fraction", "0.5")
    assert code == 0, out
    assert "24 in the catalog (24 usable), 24 new this run" in out
    assert f"24 embedded now, 0 from cache, model key {DEFAULT_MODEL}-" in out

    next(DataPaths(data_dir).demo_images.rglob("*.png")).unlink()
    code, out = _emb("run")
    assert code == 0, out
    assert "23 in the catalog (23 usable), 0 new this run, 1 removed" in out, out
    assert "0 embedded now, 23 from cache (embedded earlier" in " ".join(out.split())


def test_bad_shard_count_is_one_line(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMB_SHARDS", "1")
    code, out = _emb("run")
    assert code == 2 and out.strip() == (
        "$EMB_SHARDS='1': give a whole number of shards from 2 to 4096 (e.g. 64 for ten "
        "million images), or unset it for no partitions"
    ), out


class _Lines:
    """Stands in for `context.log`."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def test_progress_logs_every_tenth_and_draws_only_when_asked(capsys: pytest.CaptureFixture):
    """A UI run logs ~10 % steps and draws nothing; `emb run` on a terminal also draws a bar."""
    log = _Lines()
    with progress.Progress(log, "embeddings", "img", "embedded {done}/{total} images") as bar:
        for done in range(4, 101, 4):
            bar.update(done, 100)
    assert log.lines == [f"embedded {n}/100 images" for n in (12, 24, 36, 48, 60, 72, 84, 96, 100)]
    assert capsys.readouterr().err == ""

    epochs = _Lines()
    with (
        progress.bars(),
        progress.Progress(epochs, "embedding_model", "epoch", "epoch {done}/{total}", 0) as bar,
    ):
        bar.update(1, 3, "loss 0.5")
    assert epochs.lines == ["epoch 1/3: loss 0.5"]
    assert "embedding_model:  33%" in capsys.readouterr().err
