"""torchvision models by name (``weights=None``: nothing is downloaded) and their default inputs.

Default input, by torchvision family:

* classification (and the ``quantized_*`` variants, built unquantized): ``batch x 3 x S x S``. ``S`` is
  the model's own ``image_size`` when it has one (ViT, fixed by its position embeddings), else the
  smallest ``crop_size`` among the model's published weights in torchvision's weight table (the
  resolution the architecture is defined and trained at: 224 for ResNet, 299 for Inception v3, 600 for
  EfficientNet-B7), else 224;
* segmentation: ``batch x 3 x 520 x 520`` (the ``resize_size`` of its weights);
* video: ``batch x 3 x 16 x S x S`` (16-frame clips at the weights' crop size);
* optical flow (RAFT): two images ``batch x 3 x 224 x 224``;
* detection: a list of ``batch`` images ``3 x 800 x 800`` (the models resize internally). Their
  post-processing (score thresholds, NMS) depends on values, so they run only with real tensors
  (``device="cpu"``); on meta the forward stops at the first ``nonzero``.

A few constructors get arguments that give the architecture of the published weights
(:data:`PUBLISHED_ARCHITECTURE`), so that counts match torchvision's weight tables.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError, SpecError, require
from ._build import build_on
from .shapes import InputSpec, make_tensor

VIDEO_FRAMES = 16

#: Constructor arguments that make ``weights=None`` build the architecture of the published weights,
#: so that parameter counts match torchvision's weight tables: GoogLeNet's published weights drop the
#: two auxiliary classifiers (the constructor keeps them by default); FCN and DeepLabV3 weights carry
#: the auxiliary segmentation head (the constructor leaves it out by default). Inference MACs of
#: GoogLeNet do not change (its auxiliary heads run only in training); the segmentation aux head
#: runs in inference too and is counted.
PUBLISHED_ARCHITECTURE: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False},
    "quantized_googlenet": {"aux_logits": False},
    "fcn_resnet50": {"aux_loss": True},
    "fcn_resnet101": {"aux_loss": True},
    "deeplabv3_resnet50": {"aux_loss": True},
    "deeplabv3_resnet101": {"aux_loss": True},
    "deeplabv3_mobilenet_v3_large": {"aux_loss": True},
}
DETECTION_SIZE = 800
FLOW_SIZE = 224


def _tv() -> Any:
    return require("torchvision", "vision", "torchvision:NAME model specs")


def list_names() -> list[str]:
    tv = _tv()
    return list(tv.models.list_models())


def family(name: str) -> str:
    """classification | segmentation | video | optical_flow | detection | quantization."""
    tv = _tv()
    m = tv.models
    for fam, module in (("detection", m.detection), ("segmentation", m.segmentation), ("video", m.video),
                        ("optical_flow", m.optical_flow), ("quantization", m.quantization)):
        if name in m.list_models(module=module):
            return fam
    return "classification"


def _sizes(name: str, key: str) -> list[int]:
    """Every ``key`` (crop_size / resize_size) of the model's published weights, as square sides."""
    tv = _tv()
    try:
        weights = list(tv.models.get_model_weights(name))
    except (ValueError, KeyError):
        return []
    out: list[int] = []
    for w in weights:
        kw = getattr(w.transforms, "keywords", None) or {}
        value = kw.get(key)
        if isinstance(value, int):
            out.append(value)
        elif isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
            out.append(min(value))
    return out


def default_image_size(name: str, model: Any) -> int:
    size = getattr(model, "image_size", None)
    if isinstance(size, int):
        return size
    crops = _sizes(name, "crop_size")
    return min(crops) if crops else 224


@dataclass(frozen=True)
class VisionBuild:
    model: Any
    inputs: Any
    batch: int


def check_name(name: str) -> None:
    names = list_names()
    if name in names:
        return
    close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join('torchvision:' + c for c in close)}? " if close else ""
    raise SpecError(
        f"unknown torchvision model {name!r}: {hint}see torchvision.models.list_models() for the "
        f"{len(names)} names"
    )


def build_torchvision(
    name: str, *, batch: int, shapes: list[InputSpec] | None, device: str, dtype: torch.dtype | None,
) -> VisionBuild:
    tv = _tv()
    check_name(name)
    fam = family(name)
    kwargs: dict[str, Any] = {"weights": None}
    if fam == "quantization":
        kwargs["quantize"] = False  # the float model, ready for quantization; int8 kernels need real weights
    if fam in ("segmentation", "detection"):
        kwargs["weights_backbone"] = None
    if name in ("googlenet", "inception_v3", "quantized_googlenet", "quantized_inception_v3"):
        kwargs["init_weights"] = True  # silences torchvision's warning about its future default
    kwargs.update(PUBLISHED_ARCHITECTURE.get(name, {}))
    build_device = "meta" if device == "meta" else "cpu"
    try:
        model, _ = build_on(build_device, lambda: tv.models.get_model(name, **kwargs))
    except Exception as exc:  # noqa: BLE001
        lines = str(exc).strip().splitlines()
        raise SpecError(
            f"building torchvision:{name} failed: {type(exc).__name__}: {lines[0] if lines else ''}"
        ) from exc
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    float_dtype = dtype or torch.float32

    def image(shape: tuple[int, ...]) -> torch.Tensor:
        return make_tensor(InputSpec(shape), device=build_device, default_dtype=float_dtype)

    if shapes is not None:
        tensors = [make_tensor(s, device=build_device, default_dtype=float_dtype) for s in shapes]
        if fam == "detection":
            if len(tensors) == 1 and tensors[0].dim() == 4:
                inputs: Any = ([t for t in tensors[0]],)
            elif all(t.dim() == 3 for t in tensors):
                inputs = (tensors,)
            else:
                raise InputError(
                    f"torchvision:{name} takes images of shape 3xHxW (or one batch NxCxHxW), not {','.join(map(str, shapes))}"
                )
        else:
            inputs = tensors[0] if len(tensors) == 1 else tuple(tensors)
        first = shapes[0].shape
        return VisionBuild(model, inputs, first[0] if fam != "detection" or len(first) == 4 else len(shapes))

    if fam == "detection":
        imgs = [image((3, DETECTION_SIZE, DETECTION_SIZE)) for _ in range(batch)]
        return VisionBuild(model, (imgs,), batch)
    if fam == "optical_flow":
        return VisionBuild(model, (image((batch, 3, FLOW_SIZE, FLOW_SIZE)), image((batch, 3, FLOW_SIZE, FLOW_SIZE))), batch)
    if fam == "segmentation":
        sizes = _sizes(name, "resize_size")
        side = min(sizes) if sizes else 520
        return VisionBuild(model, image((batch, 3, side, side)), batch)
    if fam == "video":
        side = default_image_size(name, model)
        return VisionBuild(model, image((batch, 3, VIDEO_FRAMES, side, side)), batch)
    side = default_image_size(name, model)
    return VisionBuild(model, image((batch, 3, side, side)), batch)


__all__ = ["VisionBuild", "build_torchvision", "check_name", "default_image_size", "family", "list_names"]
