"""The encoding reader: byte-order marks, the allow-list, streamed transcoding, the hint."""

from __future__ import annotations

import codecs
import gzip
import io

import pytest

from bulkport.errors import BadRequest
from bulkport.pipeline import decompress, encodings, formats

TEXT = "id,email,name\r\n" + "".join(f"{i},u{i}@example.com,José Zoë “{i}”\r\n"
                                     for i in range(20_000))


@pytest.mark.parametrize(("bom", "codec"), [
    (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (b"id,", None),
])
def test_from_bom(bom: bytes, codec: str | None) -> None:
    assert encodings.from_bom(bom + b"rest") == codec


def test_allow_list() -> None:
    assert [encodings.parse_encoding(v) for v in ("UTF-8", "latin1", "ISO-8859-1", "cp1252",
                                                  "Windows-1252", "iso_8859_15", "utf-16")] == [
        "utf-8", "latin-1", "latin-1", "cp1252", "cp1252", "iso8859-15", "utf-16"]
    assert encodings.parse_encoding(None) is None
    for bad in ("ebcdic", "base64", "rot13", "x" * 100):
        with pytest.raises(BadRequest, match="unsupported encoding"):
            encodings.parse_encoding(bad)


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "cp1252", "latin-1", "iso8859-15",
                                   "utf-16-be"])
def test_transcoding_streams_utf8(codec: str) -> None:
    text = TEXT if codec.startswith("utf") or codec == "cp1252" else TEXT.replace(
        "“", "<").replace("”", ">")
    raw = io.BytesIO(text.encode(codec))
    out = encodings.as_utf8(raw, codec)
    head = formats.sniff(out)  # a peek, then reading from the start
    assert head == text.encode()[:formats.SNIFF_BYTES]
    assert out.read() == text.encode()


def test_transcoding_after_gzip_and_in_small_reads() -> None:
    raw = io.BytesIO(gzip.compress(TEXT.encode("utf-16")))
    out = encodings.as_utf8(decompress.open_decompressed(raw), "utf-16")
    got = bytearray()
    while chunk := out.read(777):
        got += chunk
    assert bytes(got) == TEXT.encode()
    assert out.readline() == b""


def test_bad_bytes_stay_bad() -> None:
    # 0x81 is not a cp1252 character: it comes out as bytes that are not UTF-8.
    out = encodings.as_utf8(io.BytesIO(b"a\x81b\n"), "cp1252").read()
    with pytest.raises(UnicodeDecodeError):
        out.decode("utf-8")


@pytest.mark.parametrize(("data", "guess"), [
    ("José".encode(), None),
    ("José, “quoted”".encode("cp1252"), "cp1252"),
    ("Zürich".encode("latin-1"), "cp1252"),  # printable Latin-1 is cp1252 too
    (b"\x81\x8d caf\xe9", "latin-1"),  # bytes cp1252 does not define
    ("id,email\nx,y\n".encode("utf-16-le"), "utf-16-le"),
    ("id,email\nx,y\n".encode("utf-16-be"), "utf-16-be"),
    ("é".encode() * 3000 + "é".encode()[:1], None),  # a character cut at the block's end
])
def test_guess(data: bytes, guess: str | None) -> None:
    assert encodings.guess(data) == guess


def test_head_as_utf8() -> None:
    assert encodings.head_as_utf8("id;Émail\n".encode("utf-16"), None) == "id;Émail\n".encode()
    assert encodings.head_as_utf8("Émail".encode("cp1252"), "cp1252") == "Émail".encode()
    assert encodings.head_as_utf8(b"plain", None) == b"plain"
