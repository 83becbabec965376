"""Image reading, verification and resizing."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from calibrl_ext.data.images import prepare_image, read_image_bytes, target_size
from calibrl_ext.data.rejects import RowRejected


def _encoded(size, fmt="PNG", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (120, 30, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_untouched_images_keep_their_exact_bytes(tmp_path):
    """Without a resize, inline bytes, {bytes, path} structs and files all yield the original bytes."""
    jpeg = _encoded((64, 48), "JPEG")
    (tmp_path / "x.jpg").write_bytes(jpeg)
    for value in (
        jpeg,
        {"bytes": jpeg, "path": "x.jpg"},
        {"bytes": None, "path": "x.jpg"},
        "x.jpg",
        f"file://{tmp_path}/x.jpg",
    ):
        prepared = prepare_image(value, image_root=tmp_path)
        assert prepared.data == jpeg and not prepared.resized and (prepared.width, prepared.height) == (64, 48)


def test_inline_bytes_win_over_a_path():
    """A struct with bytes does not touch its (possibly stale) path."""
    data, path = read_image_bytes({"bytes": _encoded((8, 8)), "path": "/nonexistent/x.png"})
    assert path == "/nonexistent/x.png" and Image.open(io.BytesIO(data)).size == (8, 8)


@pytest.mark.parametrize(
    ("size", "min_pixels", "max_pixels", "expected"),
    [
        ((448, 448), None, 200_704, None),  # inside the bounds: untouched
        ((1000, 500), None, 200_704, (616, 308)),  # shrunk, sides multiples of 28, aspect kept
        ((30, 30), 3136, None, (56, 56)),  # grown to the minimum
        ((4000, 30), None, 100_000, (3640, 28)),  # very thin: each side at least the factor (may exceed max)
    ],
)
def test_target_size(size, min_pixels, max_pixels, expected):
    """Resize only outside [min_pixels, max_pixels]; sides are multiples of 28; a shrunk image stays <= max."""
    result = target_size(*size, min_pixels, max_pixels, 28)
    assert result == expected
    if result is not None:
        assert result[0] % 28 == 0 and result[1] % 28 == 0
        if max_pixels and min(result) > 28:
            assert result[0] * result[1] <= max_pixels


def test_resized_images_are_reencoded_in_their_format():
    """PNG stays PNG, JPEG stays JPEG, other formats (and JPEG-incompatible modes) become PNG."""
    for fmt, mode, expected in (
        ("PNG", "RGB", "PNG"),
        ("JPEG", "RGB", "JPEG"),
        ("BMP", "RGB", "PNG"),
        ("PNG", "RGBA", "PNG"),
    ):
        prepared = prepare_image(_encoded((200, 100), fmt, mode), max_pixels=5000)
        image = Image.open(io.BytesIO(prepared.data))
        assert prepared.resized and image.format == expected
        assert image.size == (prepared.width, prepared.height) and image.width * image.height <= 5000


def test_bad_values_are_rejected_with_a_reason(tmp_path):
    """Empty bytes, structs with nothing, unknown types and remote URLs are rejected, not crashed on."""
    cases = [
        (b"", "image_corrupt"),
        (bytearray(b"xx"), "image_corrupt"),
        ({"bytes": None, "path": None}, "image_corrupt"),
        ("", "image_missing"),
        ("https://example.com/a.png", "image_missing"),
        (12, "image_corrupt"),
    ]
    for value, reason in cases:
        with pytest.raises(RowRejected) as caught:
            prepare_image(value, image_root=tmp_path)
        assert caught.value.reason.value == reason
