"""Calibration and evaluation samples: the inputs a float model is run on.

Three layouts are accepted (`load_samples`):
- a folder of `.npy` files, one preprocessed sample each (a model with one input);
- an `.npz` file keyed by input name, each array holding one sample of the input's shape
  or a stack of them along a new leading axis (or along the batch axis when it is 1);
- a folder of images (PNG, JPEG, BMP via Pillow) for a model with one NCHW input: each
  is converted to RGB, resized (bilinear) to the input's static H x W, laid out NCHW and
  normalized as `(pixel - mean[c]) / std[c]` on the 0..255 pixel scale.

Samples are checked as they are read: shape, dtype (any float is taken as float32, an
integer or other dtype is an error) and finiteness; every problem is a one-line
`EmberError` naming the file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ember.support.diagnostics import EmberError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class InputSpec:
    """A graph input: its ONNX name and static shape."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Normalization:
    """Per-channel `(pixel - mean) / std` on the 0..255 scale (one value = all channels)."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Normalize an NCHW float array of 0..255 pixels."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        if np.any(std == 0):
            raise EmberError(f"normalization std {list(self.std)} contains 0")
        return ((pixels - mean) / std).astype(np.float32)


class SampleSet:
    """A sized, re-iterable collection of samples; each is `{input name: array}`."""

    def __init__(self, source: str, items: Sequence[object], read):
        self.source = source
        self._items = list(items)
        self._read = read

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for item in self._items:
            yield self._read(item)

    def names(self) -> list[str]:
        """One label per sample: its file name, or `archive.npz[i]`."""
        return [item.name if isinstance(item, Path) else f"{Path(self.source).name}[{item}]" for item in self._items]


def load_samples(
    path: str | Path,
    inputs: Sequence[InputSpec],
    normalization: Normalization | None = None,
    limit: int = 0,
    files: Sequence[str] | None = None,
) -> SampleSet:
    """The samples at `path` for a model with `inputs` (see the module docstring).

    `limit` keeps the first samples only (0 = all); `files` picks these file names of a
    folder, in this order (fixed calibration / evaluation splits)."""
    source = Path(path)
    if not source.exists():
        raise EmberError(f"{source}: calibration data not found (expected a folder of .npy or image files, or an .npz)")
    if source.is_file():
        if source.suffix != ".npz":
            raise EmberError(f"{source}: calibration data must be a folder or an .npz file")
        samples = _npz_samples(source, inputs)
    else:
        samples = _folder_samples(source, inputs, normalization or Normalization(), files)
    if limit > 0:
        samples._items = samples._items[:limit]
    return samples


def _folder_samples(folder: Path, inputs: Sequence[InputSpec], normalization: Normalization, files) -> SampleSet:
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as err:
        raise EmberError(f"{folder}: cannot read the calibration folder ({err.strerror})") from None
    if files is not None:
        by_name = {p.name: p for p in entries}
        missing = [f for f in files if f not in by_name]
        if missing:
            raise EmberError(f"{folder}: sample file '{missing[0]}' not found")
        entries = [by_name[f] for f in files]
    arrays = [p for p in entries if p.suffix.lower() == ".npy"]
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    if not arrays and not images:
        raise EmberError(f"{folder}: no .npy or image (.png/.jpg/.bmp) files to calibrate on")
    if arrays and images:
        raise EmberError(f"{folder}: mixes .npy and image files; keep one kind per folder")
    if len(inputs) != 1:
        names = ", ".join(spec.name for spec in inputs)
        raise EmberError(f"{folder}: a folder feeds a model with one input, this one has {len(inputs)} ({names}); use an .npz keyed by input name")
    spec = inputs[0]
    if arrays:
        return SampleSet(str(folder), arrays, lambda p: {spec.name: _checked(np_load(p), spec, p.name)})
    if len(spec.shape) != 4 or spec.shape[0] != 1 or spec.shape[1] not in (1, 3):
        raise EmberError(f"{folder}: images need an input of shape 1x3xHxW (or 1x1xHxW); '{spec.name}' is {'x'.join(map(str, spec.shape))}")
    return SampleSet(str(folder), images, lambda p: {spec.name: _image(p, spec, normalization)})


def np_load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise EmberError(f"{path}: not a readable .npy array ({err})") from None


def _npz_samples(path: Path, inputs: Sequence[InputSpec]) -> SampleSet:
    try:
        archive = np.load(path, allow_pickle=False)
        arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise EmberError(f"{path}: not a readable .npz archive ({err})") from None
    stacks = {}
    for spec in inputs:
        if spec.name not in arrays:
            raise EmberError(f"{path}: no array for input '{spec.name}' (keys: {', '.join(arrays) or 'none'})")
        stacks[spec.name] = _as_stack(arrays[spec.name], spec, f"{path}['{spec.name}']")
    counts = {len(stack) for stack in stacks.values()}
    if len(counts) != 1:
        raise EmberError(f"{path}: the inputs hold different numbers of samples")
    count = counts.pop()
    if count == 0:
        raise EmberError(f"{path}: holds no samples")
    return SampleSet(
        str(path),
        list(range(count)),
        lambda i: {name: _checked(stack[i], spec, f"{path.name}[{i}]") for (name, stack), spec in zip(stacks.items(), inputs)},
    )


def _as_stack(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """Samples along a leading axis: one sample, a new leading axis, or a batch-1 axis."""
    if array.shape == spec.shape:
        return array[None]
    if array.shape[1:] == spec.shape:
        return array
    if spec.shape and spec.shape[0] == 1 and array.shape[1:] == spec.shape[1:]:
        return array[:, None]
    raise EmberError(f"{where}: shape {'x'.join(map(str, array.shape))} does not fit input '{spec.name}' of shape {'x'.join(map(str, spec.shape))}")


def _checked(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.floating):
        raise EmberError(f"{where}: dtype {array.dtype}, expected float32 samples for input '{spec.name}'")
    if array.shape != spec.shape:
        raise EmberError(f"{where}: shape {'x'.join(map(str, array.shape))}, input '{spec.name}' expects {'x'.join(map(str, spec.shape))}")
    if not np.all(np.isfinite(array)):
        raise EmberError(f"{where}: sample contains NaN or Inf")
    return np.ascontiguousarray(array, dtype=np.float32)


def _image(path: Path, spec: InputSpec, normalization: Normalization) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    _, channels, height, width = spec.shape
    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L").resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise EmberError(f"{path}: not a readable image ({err})") from None
    nchw = pixels.reshape(height, width, channels).transpose(2, 0, 1)[None]
    return normalization.apply(nchw)
