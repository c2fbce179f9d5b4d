"""Where the forward pass runs: torch, or the same graph exported to ONNX and run by ONNX
Runtime on the CPU (2.7x torch eager for EfficientNet-Lite0 on 2 cores, features equal to 1e-5;
benchmarks/results/embed_throughput.md). Training is always torch.

The exported graph takes uint8 pixels, channels last (`pixel_input.Pixels`): the decoding
workers only decode and resize. An export is cached under the data folder by model key
(`exports/<model_key>.onnx` with a `.json` beside it: the key, the file's SHA-256, the feature
size, the versions that made it and the difference to torch measured when it was made); with a
valid one the torch model is not even built. A file whose record does not match is made again, never
trusted. The model key does not name the runtime: both give the same vectors (checked at export
to within `MAX_DIFFERENCE`), so the LMDB cache serves either. A model that does not export, or
whose export disagrees with torch, runs on torch, with one log line naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from embedding_assets.common.choices import Runtime
from embedding_assets.embedding.backbones import Backbone, BackboneSpec
from embedding_assets.embedding.pixel_input import on_pixels

if TYPE_CHECKING:
    from embedding_assets.embedding.run_options import RunOptions

log = logging.getLogger(__name__)
MAX_DIFFERENCE = 1e-4  # of L2-normalized features, torch vs the exported graph
OPSET = 18
EXPORT_FORMAT = "emb-onnx-export-v2"  # v2: uint8 pixels in (v1 took normalized floats)


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(choice: Runtime, device: str) -> str:
    """`auto`: ONNX Runtime on the CPU when it is installed, torch on a GPU (CUDA keeps torch
    with AMP). `onnxruntime` on a GPU device is refused: its CUDA provider is not wired up."""
    if choice == "torch":
        return "torch"
    on_cpu = torch.device(device).type == "cpu"
    if choice == "onnxruntime":
        if not on_cpu:
            raise ValueError(
                f"runtime 'onnxruntime' runs on the CPU only, the device is {device}: use "
                "runtime 'auto' or 'torch' on a GPU"
            )
        if not available():
            raise ImportError("runtime 'onnxruntime' needs the package: pip install onnxruntime")
        return "onnxruntime"
    return "onnxruntime" if on_cpu and available() else "torch"


class OnnxModule(nn.Module):
    """An exported graph behind the nn.Module call the embedder makes: (n, h, w, 3) uint8
    pixels in, pooled features out (CPU)."""

    takes_pixels = True

    def __init__(self, model: str | Path | bytes, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are about unused initializers
        # Threads sleep between batches rather than spin: spinning took the core the decoding
        # worker needs (benchmarks/embed_throughput.py, the core split).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.uint8)
        return torch.from_numpy(self.session.run(None, {self.input: batch})[0])


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def valid_record(onnx_path: Path, model_key: str) -> dict | None:
    """The record of the export at `onnx_path` when the file is the export it describes (same
    format, key and bytes), else None."""
    try:
        record = json.loads(_record_path(onnx_path).read_text())
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(record, dict)
        and record.get("format") == EXPORT_FORMAT
        and record.get("model_key") == model_key
        and isinstance(record.get("dim"), int)
        and onnx_path.is_file()
        and record.get("sha256") == _digest(onnx_path)
    )
    return record if ok else None


def _sample(crop: int) -> torch.Tensor:
    """A fixed batch of two images of pixels for the export and its check (seeded)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, crop, crop, 3), generator=generator, dtype=torch.uint8)


def _difference(model: nn.Module, exported: OnnxModule, crop: int) -> float:
    x = _sample(crop)
    with torch.inference_mode():
        a = nn.functional.normalize(model(x).float(), dim=1)
        b = nn.functional.normalize(exported(x).float(), dim=1)
    return float((a - b).abs().max())


def export(backbone: Backbone, model_key: str, folder: Path) -> Path:
    """Export `backbone` behind its pixel input layer (dynamic batch size) to
    `folder/<model_key>.onnx` and record it, after checking the graph against torch; written
    atomically. Raises on a model that does not export or disagrees."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{model_key}.onnx"
    tmp = folder / f".{model_key}.{os.getpid()}.onnx.tmp"
    pre = backbone.spec.preprocess
    crop = pre.crop
    model = on_pixels(backbone.model.eval(), pre.mean, pre.std)
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                model,
                (_sample(crop),),
                input_names=["images"],
                output_names=["features"],
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        program.save(str(tmp))
        difference = _difference(model, OnnxModule(tmp, threads=1), crop)
        if not difference <= MAX_DIFFERENCE:
            raise ValueError(f"exported features differ from torch's by {difference:.2g}")
        record = {
            "format": EXPORT_FORMAT,
            "model_key": model_key,
            "dim": backbone.dim,
            "sha256": _digest(tmp),
            "opset": OPSET,
            "torch": torch.__version__,
            "max_difference_to_torch": difference,
        }
        tmp.replace(target)
        _record_path(target).write_text(json.dumps(record, indent=1))
    finally:
        tmp.unlink(missing_ok=True)
    return target


def exported_path(backbone: Backbone, model_key: str, folder: Path) -> Path:
    """The cached export of this model key, made (again) unless a valid one is there."""
    target = folder / f"{model_key}.onnx"
    return target if valid_record(target, model_key) else export(backbone, model_key, folder)


def try_export(
    backbone: Backbone, model_key: str, folder: Path, note: Callable[[str], None] = log.info
) -> Path | None:
    """The valid export of this model key (made when missing or stale), or None when the model
    cannot run on ONNX Runtime: then `note` says so once, naming the model."""
    try:
        return exported_path(backbone, model_key, folder)
    except Exception as exc:  # noqa: BLE001 - any export failure means: run it on torch
        note(f"{backbone.spec.name} does not run on ONNX Runtime ({_one_line(exc)}); using torch")
        return None


def on_runtime(
    build: Callable[[], Backbone],
    spec: BackboneSpec,
    model_key: str,
    options: RunOptions,
    note: Callable[[str], None] = log.info,
) -> tuple[Backbone, str]:
    """(the backbone to run, the runtime it runs on): the options' runtime as resolved for their
    device, or torch when the model cannot be exported. `build` makes the torch backbone; with a
    valid export of `model_key` in `options.exports` it is not called (building Lite0 costs more
    than a second)."""
    folder = options.exports
    if resolve(options.runtime, options.device) == "onnxruntime" and folder is not None:
        threads = options.forward_threads()
        target = folder / f"{model_key}.onnx"
        record = valid_record(target, model_key)
        if record is not None:
            return Backbone(OnnxModule(target, threads), record["dim"], spec), "onnxruntime"
        backbone = build()
        path = try_export(backbone, model_key, folder, note)
        if path is not None:
            return Backbone(OnnxModule(path, threads), backbone.dim, spec), "onnxruntime"
        return backbone, "torch"
    return build(), "torch"


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
