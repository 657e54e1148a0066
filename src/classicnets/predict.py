"""Predict the classes of image files with a trained checkpoint.

Each image is decoded at the checkpoint's channels (grayscale <-> RGB), rescaled so its short side is the
test scale the net was evaluated at, centre-cropped to the training size and normalised with the
training mean/std: the trainer's own test preprocessing, so a test image gets the same answer here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms.v2.functional import rgb_to_grayscale

from classicnets.data.dataset import printable
from classicnets.data.folder import DECODE_ERRORS, ImageTooLarge, decode, error_reason
from classicnets.data.transforms import eval_transform
from classicnets.errors import ClassicNetsError
from classicnets.evaluation import InferenceModel, load_inference_model, model_device

READABLE = "PNG, JPEG, GIF, WebP, BMP or TIFF"


@dataclass
class Prediction:
    source: str  # the file (or "image N" for a tensor)
    top: list[tuple[str, float]]  # (class name, probability), most probable first


def read_image(path: str | os.PathLike, channels: int) -> torch.Tensor:
    """Decode an image file to uint8 channels x H x W (gray or RGB), or raise a ClassicNetsError naming it.

    The image folders' decoder (`data.folder.decode`), so an image is read here as it was for training, with
    the same cap: an image whose header says it is over 64 megapixels, or with sides more than 100:1 apart,
    is refused before a pixel is decoded. Alpha is dropped; an animated image gives its first frame.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file (a folder, device or pipe)" if path.exists() else "does not exist"
        raise ClassicNetsError(f"image {printable(path)} {what}: pass an image file")
    if channels not in (1, 3):
        raise ClassicNetsError(f"cannot prepare images for a {channels}-channel net: only 1 (gray) or 3 (RGB)")
    try:
        return decode(str(path), channels)
    except ImageTooLarge as e:
        raise ClassicNetsError(
            f"image {printable(path)} {e.problem}: {e.remedy} it, or pass another image"
        ) from None
    except DECODE_ERRORS as e:
        raise ClassicNetsError(
            f"cannot read image {printable(path)} ({error_reason(e)}): pass a {READABLE} file"
        ) from None


def _match_channels(image: torch.Tensor, channels: int, source: str) -> torch.Tensor:
    if image.shape[0] == channels:
        return image
    if image.shape[0] == 1 and channels == 3:
        return image.expand(3, -1, -1)
    if image.shape[0] in (3, 4) and channels == 1:
        return rgb_to_grayscale(image[:3])
    raise ClassicNetsError(f"{source} has {image.shape[0]} channels; the net takes {channels}")


def preprocess(loaded: InferenceModel, image: torch.Tensor) -> torch.Tensor:
    """One uint8 C x H x W image -> the normalised 1 x C x S x S batch the net was tested on."""
    scale = loaded.resize or loaded.input_size
    mean = loaded.mean if loaded.mean is not None else [0.0] * loaded.in_channels
    transform = eval_transform(loaded.input_size, resize=scale, mean=mean, std=loaded.std)
    return transform(image[None])


def predict(
    model_or_ckpt,
    images: Sequence[str | os.PathLike | torch.Tensor],
    *,
    topk: int = 5,
    device: str | torch.device | None = None,
) -> list[Prediction]:
    """The `topk` most probable classes of each image (file paths or uint8 C x H x W tensors)."""
    if topk < 1:
        raise ClassicNetsError(f"--topk must be 1 or more; got {topk}")
    loaded = load_inference_model(model_or_ckpt, device)
    batch, sources = [], []
    for i, item in enumerate(images):
        if isinstance(item, torch.Tensor):
            source, image = f"image {i}", item
        else:
            source, image = str(item), read_image(item, loaded.in_channels)
        batch.append(preprocess(loaded, _match_channels(image, loaded.in_channels, source)))
        sources.append(source)
    if not batch:
        return []
    model = loaded.model
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(torch.cat(batch).to(model_device(model)))
    finally:
        model.train(was_training)
    probs = logits.float().softmax(dim=1).cpu()
    k = min(topk, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [
        Prediction(source, [(loaded.classes[j], float(p)) for p, j in zip(v.tolist(), ix.tolist())])
        for source, v, ix in zip(sources, values, indices)
    ]
