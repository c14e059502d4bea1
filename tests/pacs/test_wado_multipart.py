"""The streamed multipart/related parser of WADO-RS replies: any chunking gives the same parts."""

from __future__ import annotations

import pytest

from lymphcad.pacs.client import multipart_parts

BOUNDARY = "b0und4ry-x"
PARTS = [b"\x00" * 128 + b"DICM" + bytes(range(256)) * 3, b"second\r\n--b0und4ry", b"", b"\r\n\r\nthird"]


def _message(preamble: bytes = b"") -> bytes:
    body = preamble
    for p in PARTS:
        body += f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p
    return body + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("preamble", [b"", b"ignored preamble"])
def test_parts_survive_any_chunking(size: int, preamble: bytes) -> None:
    msg = _message(preamble)
    if not preamble:
        msg = msg[2:]  # a body may open with the delimiter itself
    chunks = [msg[i : i + size] for i in range(0, len(msg), size)]
    ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    assert list(multipart_parts(ctype, iter(chunks))) == PARTS


def test_unwrapped_instance_and_bad_replies() -> None:
    assert list(multipart_parts("application/dicom", [b"ab", b"cd"])) == [b"abcd"]
    with pytest.raises(ValueError, match="unexpected WADO-RS reply type"):
        list(multipart_parts("text/html", [b"<html>"]))
    truncated = _message()[:-40]
    with pytest.raises(ValueError, match="closing delimiter"):
        list(multipart_parts(f"multipart/related; boundary={BOUNDARY}", [truncated]))
