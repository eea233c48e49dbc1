"""Text encodings of input files: byte-order marks, declared encodings, and a hint.

Every reader reads UTF-8. A file in another encoding (declared, or told by its
byte-order mark) is transcoded to UTF-8 as a stream (:func:`as_utf8`: an
incremental decoder, so memory stays bounded); gzip is undone before that.
Without either, a file is read as UTF-8 and bytes that are not UTF-8 reject
their record (``malformed_record``); :func:`guess` then names the encoding the
file's first block looks like, for the job's ``encoding_hint``.
"""

from __future__ import annotations

import codecs
import io
from typing import IO

from bulkport.errors import BadRequest

#: Accepted ``encoding`` values (lower case) -> Python codec. docs/imports.md.
ALLOWED = {
    "utf-8": "utf-8", "utf8": "utf-8",
    "utf-16": "utf-16", "utf-16le": "utf-16-le", "utf-16be": "utf-16-be",
    "utf-32": "utf-32", "utf-32le": "utf-32-le", "utf-32be": "utf-32-be",
    "latin-1": "latin-1", "latin1": "latin-1", "iso-8859-1": "latin-1",
    "cp1252": "cp1252", "windows-1252": "cp1252",
    "iso-8859-15": "iso8859-15", "latin-9": "iso8859-15",
}
#: Byte-order marks, longest first (a UTF-32-LE mark begins with the UTF-16-LE one).
#: The codec named reads the mark itself and drops it.
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"))
#: Input read per decoding step (bytes).
CHUNK_BYTES = 64 * 1024


def parse_encoding(value: str | None) -> str | None:
    """The codec of a declared encoding; anything off the allow-list is a 400."""
    if value is None or value == "":
        return None
    codec = ALLOWED.get(value.strip().lower().replace("_", "-"))
    if codec is None:
        names = ["utf-8", "utf-16", "utf-16le", "utf-16be", "utf-32", "latin-1", "cp1252",
                 "iso-8859-15"]
        raise BadRequest(f"unsupported encoding {value[:40]!r}; use one of: "
                         f"{', '.join(names)}", allowed=names)
    return codec


def from_bom(head: bytes) -> str | None:
    """The codec a byte-order mark at the start of ``head`` tells, else None."""
    for bom, codec in BOMS:
        if head.startswith(bom):
            return codec
    return None


def guess(head: bytes) -> str | None:
    """The encoding a first block that is not UTF-8 looks like; None when it is UTF-8.

    The rule, simple on purpose: NUL bytes in every other position (and only
    there) -> UTF-16 (LE or BE); valid UTF-8 (a character cut at the block's end
    allowed) -> None;
    valid cp1252 -> cp1252 (a superset of the printable Latin-1); else latin-1,
    which decodes anything.
    """
    sample = head[:4096]
    # Checked first: ASCII text in UTF-16 is valid UTF-8 (NUL is a character there).
    if len(sample) >= 4:
        if sample[1::2].count(0) > len(sample) // 4 and not sample[0::2].count(0):
            return "utf-16-le"
        if sample[0::2].count(0) > len(sample) // 4 and not sample[1::2].count(0):
            return "utf-16-be"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return None
    except UnicodeDecodeError:
        pass
    try:
        head.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def hint_message(codec: str) -> str:
    return (f"the file is not valid UTF-8 and looks like {codec}: records with other "
            f"bytes are rejected; send encoding={codec} to read it as {codec}")


def head_as_utf8(head: bytes, declared: str | None) -> bytes:
    """The first block of a file as UTF-8, read as the worker will read the file."""
    codec = from_bom(head) or declared or "utf-8"
    if codec == "utf-8":
        return head
    text = codecs.getincrementaldecoder(codec)(errors="surrogateescape").decode(head)
    return text.encode("utf-8", "surrogateescape")


def as_utf8(stream: IO[bytes], codec: str) -> IO[bytes]:
    """``stream`` (bytes in ``codec``) as a stream of UTF-8 bytes.

    Bytes that do not decode stay invalid UTF-8 on the way out (surrogateescape),
    so the reader rejects their record as for a UTF-8 file.
    """
    return io.BufferedReader(_Transcoder(stream, codec), CHUNK_BYTES)


class _Transcoder(io.RawIOBase):
    """UTF-8 bytes from a stream in another encoding, decoded incrementally.

    Seekable for what the readers need (peeking at the first bytes): a seek
    backwards starts over from the beginning, a seek forwards reads on.
    """

    def __init__(self, inner: IO[bytes], codec: str) -> None:
        super().__init__()
        self._inner = inner
        self._codec = codec
        self._start = inner.tell()
        self._reset()

    def _reset(self) -> None:
        self._decoder = codecs.getincrementaldecoder(self._codec)(errors="surrogateescape")
        self._pending = b""
        self._offset = 0
        self._pos = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._offset >= len(self._pending) and not self._eof:
            chunk = self._inner.read(CHUNK_BYTES)
            self._eof = not chunk
            text = self._decoder.decode(chunk, final=self._eof)
            self._pending = text.encode("utf-8", "surrogateescape")
            self._offset = 0
        n = min(len(buffer), len(self._pending) - self._offset)
        buffer[:n] = self._pending[self._offset:self._offset + n]
        self._offset += n
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        if offset < self._pos:
            self._inner.seek(self._start)
            self._reset()
        scratch = bytearray(CHUNK_BYTES)
        while self._pos < offset:
            if not self.readinto(memoryview(scratch)[:min(CHUNK_BYTES, offset - self._pos)]):
                break
        return self._pos
