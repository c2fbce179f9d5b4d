"""torchvision classification models as feature extractors, with weights from wherever the user
has them: none (seeded random init), a torchvision weights name, or a local `.pth` file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_INIT_SEED = 0


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but are neither cached nor downloadable."""


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop, scale to [0, 1], normalize: the identity of the
    preprocessing, which is part of the model key."""

    resize: int
    crop: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def transform(self) -> v2.Compose:
        return v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize(self.resize, antialias=True),
                v2.CenterCrop(self.crop),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
            ]
        )

    def as_dict(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "mean": self.mean, "std": self.std}


@dataclass
class Backbone:
    model: nn.Module
    dim: int
    spec: BackboneSpec


def available_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


@dataclass(frozen=True)
class BackboneSpec:
    """What identifies a feature extractor, resolved without building it (cheap), so that a
    no-op run can compute its model key and find everything cached."""

    name: str
    weights: str | None
    weights_id: str  # "none", the torchvision weights name, or "file:<sha256>"
    preprocess: Preprocess

    def identity(self) -> dict:
        return {"model": self.name, "weights": self.weights_id, **self.preprocess.as_dict()}


def resolve_spec(name: str, weights: str | None = None, image_size: int = 224) -> BackboneSpec:
    """Check the model and weights names and settle the preprocessing.

    `weights`: None/"none" (random, seeded so every process gets the same model), a torchvision
    weights name ("DEFAULT", "IMAGENET1K_V2" or "ResNet50_Weights.IMAGENET1K_V2"), or a path to
    a `.pth` state dict. Preprocessing follows the weights' own transforms where they have them.
    """
    if name not in available_models():
        raise ValueError(
            f"model {name!r} is not a torchvision classification model; choose one of: "
            + ", ".join(available_models())
        )
    default_pre = Preprocess(resize=image_size, crop=image_size)
    if weights in (None, "", "none"):
        return BackboneSpec(name, None, "none", default_pre)
    if weights.endswith((".pth", ".pt")) or Path(weights).exists():
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {path} does not exist; pass an existing .pth file"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return BackboneSpec(name, str(path), f"file:{digest}", default_pre)
    enum = _resolve_weights(name, weights)
    t = enum.transforms()
    pre = Preprocess(
        resize=int(_first(t.resize_size)),
        crop=int(_first(t.crop_size)),
        mean=tuple(t.mean),
        std=tuple(t.std),
    )
    return BackboneSpec(name, weights, str(enum), pre)


def build_backbone(spec: BackboneSpec, allow_download: bool = True) -> Backbone:
    """The model with its class-score head replaced by Identity, in eval mode."""
    if spec.weights_id == "none":
        torch.manual_seed(RANDOM_INIT_SEED)
        model = torchvision.models.get_model(spec.name, weights=None)
    elif spec.weights_id.startswith("file:"):
        model = torchvision.models.get_model(spec.name, weights=None)
        _load_local(model, Path(spec.weights), head=_last_linear(model, spec.name)[0])
    else:
        enum = _resolve_weights(spec.name, spec.weights)
        _ensure_cached(enum, allow_download)
        model = torchvision.models.get_model(spec.name, weights=enum)
    native = getattr(model, "image_size", None)  # ViTs only take the size they were built for
    if native is not None and native != spec.preprocess.crop:
        raise ValueError(
            f"{spec.name} needs image_size={native}, got {spec.preprocess.crop}; set image_size"
        )
    dim = _strip_head(model, spec.name)
    return Backbone(model.eval(), dim, spec)


def _first(value) -> int:
    return value[0] if isinstance(value, list | tuple) else value


def _last_linear(model: nn.Module, name: str) -> tuple[str, nn.Linear]:
    """The last Linear layer registered: the class-score head of every torchvision classifier
    that has one (resnet fc, efficientnet/convnext classifier[-1], vit heads.head, ...)."""
    last = None
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (mod_name, module)
    if last is None:
        raise ValueError(f"model {name!r} has no Linear classifier head to remove")
    return last


def _strip_head(model: nn.Module, name: str) -> int:
    """Replace the class-score head with Identity; return the feature size."""
    path, linear = _last_linear(model, name)
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, nn.Identity())
    return linear.in_features


def _resolve_weights(name: str, weights: str):
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
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def _ensure_cached(enum, allow_download: bool) -> None:
    target = weights_cache_path(enum)
    if target.exists():
        return
    hint = (
        f"Download {enum.url} on a machine with internet and place it at {target} "
        "(or set TORCH_HOME), or pass weights=/path/to/file.pth, or weights=none."
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
