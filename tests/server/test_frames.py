import cv2
import numpy as np
import pytest

from server.frames import FrameMessageError, decode_frame, encode_frame, image_size
from stream4d.testdata import SHARED_DATA

IMAGE = str(SHARED_DATA / "dtu_scan24/images/000000.png")


def _small_rgb():
    bgr = cv2.resize(cv2.imread(IMAGE), (160, 120), interpolation=cv2.INTER_AREA)
    return bgr


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_frame_message_round_trips(ext):
    bgr = _small_rgb()
    ok, enc = cv2.imencode(ext, bgr)
    assert ok
    t, rgb = decode_frame(encode_frame(enc.tobytes(), 1.25))
    assert t == 1.25 and rgb.shape == (120, 160, 3) and rgb.dtype == np.uint8
    tol = 0 if ext == ".png" else 12
    assert np.abs(rgb[..., ::-1].astype(int) - bgr.astype(int)).mean() <= tol


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_image_size_is_read_from_the_header(ext):
    _, enc = cv2.imencode(ext, _small_rgb())
    assert image_size(enc.tobytes()) == (160, 120)


@pytest.mark.parametrize("message, code", [
    (b"", "bad_frame"),
    (b"12345678", "bad_frame"),
    (encode_frame(b"GIF89a-not-allowed", 0.0), "bad_image"),
    (encode_frame(b"\xff\xd8\xff\xe0" + b"\x00" * 40, 0.0), "bad_image"),
    (encode_frame(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, float("nan")), "bad_timestamp"),
    (encode_frame(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, -1.0), "bad_timestamp"),
])
def test_malformed_frame_messages_are_refused(message, code):
    with pytest.raises(FrameMessageError) as err:
        decode_frame(message)
    assert err.value.code == code


def test_huge_image_is_refused_before_decoding():
    _, enc = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(enc.tobytes())
    data[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")  # IHDR claims 100000 x 100000
    with pytest.raises(FrameMessageError) as err:
        decode_frame(encode_frame(bytes(data), 0.0))
    assert err.value.code == "bad_image_size"


def test_truncated_jpeg_is_refused():
    _, enc = cv2.imencode(".jpg", _small_rgb())
    data = enc.tobytes()
    with pytest.raises(FrameMessageError):
        decode_frame(encode_frame(data[:300], 0.0))
