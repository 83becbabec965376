"""Images: read any input form, check that they decode, optionally resize, encode as ``{bytes, path}``.

Inputs come as raw bytes, ``{bytes, path}`` dicts (HF ``Image`` feature, arrow/parquet structs),
path strings (absolute, relative to an image root, or ``file://``) or PIL images. The output is
verl's image struct ``{"bytes": <encoded image>, "path": <original path or None>}``.

Lossless by default: when no resize is asked for (or the image is already inside the pixel bounds)
the ORIGINAL encoded bytes are written unchanged, so they round-trip bit for bit. Only a resized
image is re-encoded (PNG stays PNG, JPEG stays JPEG at :data:`JPEG_QUALITY`, other formats
become PNG). Every image is fully decoded once to catch corrupt bytes before training does.

Reusable from other CLIs (``data_prep/build_benchmarks.py``): :func:`prepare_image` and
:func:`image_struct`.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from calibrl_ext.data.rejects import RejectReason, RowRejected

#: JPEG quality used when a resized JPEG is re-encoded (only then: untouched images keep their bytes).
JPEG_QUALITY = 95

#: Formats a resized image is re-encoded in as itself; any other format is re-encoded as PNG.
REENCODE_AS_SELF = ("PNG", "JPEG", "WEBP")

#: Side multiple a resize rounds to by default: Qwen2.5-VL's patch 14 x spatial merge 2, so the
#: model's processor does not resize the image a second time.
DEFAULT_RESIZE_FACTOR = 28

#: Size in bytes of the content digest used for duplicate detection.
DIGEST_BYTES = 16


@dataclass(frozen=True)
class PreparedImage:
    """One image ready to be written.

    Attributes:
        data: encoded image bytes (the original bytes unless the image was resized).
        path: the path the image came from, as given in the input (None for inline bytes).
        width, height: pixel size of ``data``.
        source_digest: blake2b digest of the ORIGINAL bytes (duplicate detection).
        resized: whether ``data`` was re-encoded after a resize.
    """

    data: bytes
    path: str | None
    width: int
    height: int
    source_digest: bytes
    resized: bool

    def struct(self) -> dict[str, Any]:
        """verl's image struct for the ``images`` column."""
        return {"bytes": self.data, "path": self.path}


def image_struct(image: PreparedImage) -> dict[str, Any]:
    """``{"bytes": ..., "path": ...}`` for the ``images`` column."""
    return image.struct()


def _resolve_path(path: str, image_root: str | Path | None) -> Path:
    if path.startswith("file://"):
        path = path[len("file://") :]
    if path.startswith(("http://", "https://")):
        raise RowRejected(
            RejectReason.IMAGE_MISSING,
            f"remote image {path} is not fetched by data prep; download the images and point --image-root at them",
        )
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and image_root is not None:
        resolved = Path(image_root) / resolved
    return resolved


def _read_file(path: str, image_root: str | Path | None) -> bytes:
    resolved = _resolve_path(path, image_root)
    try:
        return resolved.read_bytes()
    except FileNotFoundError:
        raise RowRejected(RejectReason.IMAGE_MISSING, f"image file not found: {resolved}") from None
    except OSError as error:
        raise RowRejected(RejectReason.IMAGE_UNREADABLE, f"cannot read image file {resolved}: {error}") from None


def read_image_bytes(value: Any, image_root: str | Path | None = None) -> tuple[bytes, str | None]:
    """The encoded bytes of one image value and the path it came from.

    Args:
        value: raw bytes; a ``{bytes, path}`` dict (bytes win when present); a path string or
            ``os.PathLike`` (relative paths are resolved against ``image_root``); or a PIL image
            (encoded losslessly as PNG).
        image_root: folder relative paths are resolved against.

    Raises:
        RowRejected: ``image_missing`` / ``image_unreadable`` for files, ``image_corrupt`` for an
            empty or unusable value.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        data, path = bytes(value), None
    elif isinstance(value, dict):
        raw, path = value.get("bytes"), value.get("path")
        path = str(path) if path else None
        if raw:
            data = bytes(raw)
        elif path:
            data = _read_file(path, image_root)
        else:
            raise RowRejected(RejectReason.IMAGE_CORRUPT, "image struct has neither bytes nor a path")
    elif isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if not path.strip():
            raise RowRejected(RejectReason.IMAGE_MISSING, "image path is an empty string")
        data = _read_file(path, image_root)
    elif isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        data, path = buffer.getvalue(), getattr(value, "filename", None) or None
    else:
        raise RowRejected(
            RejectReason.IMAGE_CORRUPT,
            f"image value of type {type(value).__name__} is neither bytes, a path, a {{bytes, path}} dict "
            "nor a PIL image",
        )
    if not data:
        raise RowRejected(RejectReason.IMAGE_CORRUPT, f"image {path or '(inline)'} has zero bytes")
    return data, path


def decode_image(data: bytes, label: str = "(inline)") -> Image.Image:
    """Fully decode ``data`` (not just the header), so truncated or corrupt files are caught here.

    Raises:
        RowRejected: ``image_corrupt`` naming ``label`` and PIL's error.
    """
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as error:
        raise RowRejected(RejectReason.IMAGE_CORRUPT, f"image {label} is too large to decode safely: {error}") from None
    except UnidentifiedImageError:
        # PIL's own message names a memory address; say what the bytes look like instead (deterministic).
        raise RowRejected(
            RejectReason.IMAGE_CORRUPT,
            f"image {label} is in no format PIL knows ({len(data)} bytes starting {data[:8]!r})",
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise RowRejected(RejectReason.IMAGE_CORRUPT, f"image {label} does not decode: {error}") from None
    return image


def target_size(
    width: int, height: int, min_pixels: int | None, max_pixels: int | None, factor: int = DEFAULT_RESIZE_FACTOR
) -> tuple[int, int] | None:
    """The size to resize to, or None when ``width * height`` already lies in ``[min_pixels, max_pixels]``.

    The aspect ratio is kept; each side is rounded to a multiple of ``factor`` (down when shrinking
    below ``max_pixels``, up when growing above ``min_pixels``) and is at least ``factor`` (so an
    extremely thin image can end slightly above ``max_pixels``, as with Qwen's own ``smart_resize``).
    """
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        scale = math.sqrt(max_pixels / pixels)
        new_w = max(factor, math.floor(width * scale / factor) * factor)
        new_h = max(factor, math.floor(height * scale / factor) * factor)
    elif min_pixels is not None and pixels < min_pixels:
        scale = math.sqrt(min_pixels / pixels)
        new_w = max(factor, math.ceil(width * scale / factor) * factor)
        new_h = max(factor, math.ceil(height * scale / factor) * factor)
    else:
        return None
    return new_w, new_h


def _encode(image: Image.Image, source_format: str | None) -> bytes:
    image_format = source_format if source_format in REENCODE_AS_SELF else "PNG"
    if image_format == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image_format = "PNG"  # JPEG cannot hold alpha or palettes; PNG is lossless for any mode
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format=image_format)
    return buffer.getvalue()


def prepare_image(
    value: Any,
    image_root: str | Path | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    resize_factor: int = DEFAULT_RESIZE_FACTOR,
) -> PreparedImage:
    """Read, verify and (if outside the pixel bounds) resize one image.

    Raises:
        RowRejected: the image is missing, unreadable or corrupt.
    """
    data, path = read_image_bytes(value, image_root)
    digest = hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()
    image = decode_image(data, label=path or "(inline)")
    size = target_size(image.width, image.height, min_pixels, max_pixels, resize_factor)
    if size is None:
        return PreparedImage(data, path, image.width, image.height, digest, resized=False)
    resized = image.resize(size, Image.Resampling.BICUBIC)
    return PreparedImage(_encode(resized, image.format), path, size[0], size[1], digest, resized=True)
