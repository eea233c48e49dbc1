"""Records of a JSON array, read as a stream of bounded elements.

A scanner walks the bytes of the document, tracking only strings and bracket
depth, to find where each top-level element starts and ends; each element is
then parsed alone by orjson, exactly like an NDJSON line. So:

* an element longer than ``max_line_bytes`` is one ``malformed_record`` and its
  bytes are skipped as they stream by, never held (a streaming JSON parser
  hands over a whole string value at once: a 300 MB value took 1 GB);
* an element orjson refuses (a lone surrogate escape, bytes that are not UTF-8,
  a number beyond a double, a syntax error inside it, nesting past 1024 levels)
  is one ``malformed_record`` and reading goes on with the next element;
* only a break in the array itself (a missing comma, the file ending inside
  the array, bytes after its end) ends the file: the records before it load,
  and one ``malformed_record`` says the rest was skipped.

Most elements are found by one regular expression (an object whose values are
scalars or arrays of scalars); others are scanned token by token.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import IO

import orjson

from bulkport.errors import UnreadableFile
from bulkport.pipeline.formats import sniff
from bulkport.pipeline.types import RawRecord

#: Bytes read from the stream at a time.
CHUNK_BYTES = 256 * 1024

_STRING = rb'"(?:[^"\\]++|\\.)*+"'
_FLAT_ARRAY = rb'\[(?:[^"{}\[\]]++|' + _STRING + rb")*+\]"
#: An object whose values are scalars or arrays of scalars: the usual record.
_FLAT_OBJECT = re.compile(rb'\{(?:[^"{}\[\]]++|' + _STRING + rb"|" + _FLAT_ARRAY + rb")*+\}",
                          re.DOTALL)
_STRUCTURE = re.compile(rb'[][{}",]')
#: The rest of a string's body: whatever is not a quote, escapes taken whole.
_STRING_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_SPACE = re.compile(rb"[ \t\r\n]*")
_BACKSLASH = 0x5C
_QUOTE = 0x22


class Broken(Exception):
    """The array itself is broken: nothing after this point can be read."""


class _Scanner:
    """Elements of the array (or the one object) in ``stream``, as bytes, bounded."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self._read = stream.read
        self._limit = limit
        self.buf = b""
        self.pos = 0
        self.eof = False

    def _more(self, keep: int) -> bool:
        """Drop the buffer before ``keep`` and read on; False at the end of the stream."""
        if self.eof:
            return False
        chunk = self._read(CHUNK_BYTES)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[keep:] + chunk
        self.pos -= keep
        return True

    def _peek(self) -> int | None:
        """The next byte that is not white space (not consumed), None at the end."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more(self.pos):
                return None

    def elements(self, in_array: bool) -> Iterator[bytes | None]:
        """Each element as bytes; ``None`` for one longer than the limit (skipped)."""
        if not in_array:
            if self._peek() is not None:
                yield self._element()
            self._end()
            return
        if self._peek() != ord("["):
            raise Broken("the document does not start with [")
        self.pos += 1
        if self._peek() == ord("]"):
            self.pos += 1
            self._end()
            return
        while True:
            if self._peek() is None:
                raise Broken("the file ends inside the array")
            yield self._element()
            c = self._peek()
            if c == ord(","):
                self.pos += 1
            elif c == ord("]"):
                self.pos += 1
                self._end()
                return
            elif c is None:
                raise Broken("the file ends inside the array")
            else:
                raise Broken(f"expected , or ] after element, found {chr(c)!r}")

    def _end(self) -> None:
        if self._peek() is not None:
            raise Broken("there is more after the end of the JSON document")

    def _element(self) -> bytes | None:
        if len(self.buf) - self.pos < CHUNK_BYTES // 2:
            self._more(self.pos)  # a whole record in the buffer lets the expression find it
        start = self.pos
        if self.buf[start] == ord("{"):
            m = _FLAT_OBJECT.match(self.buf, start)
            if m is not None and m.end() - start <= self._limit:
                self.pos = m.end()
                return self.buf[start:m.end()]
        return self._scan(start)

    def _scan(self, start: int) -> bytes | None:
        """Find the end of the element at ``start`` token by token, across chunks."""
        depth = 0
        in_string = False
        too_long = False
        i = start
        buf = self.buf
        while True:
            if i >= len(buf) or (in_string and buf[i] == _BACKSLASH and i + 1 >= len(buf)):
                # Out of bytes (or an escape cut in two): keep the element unless it is
                # already too long, in which case nothing of it is kept.
                if too_long or i - start > self._limit:
                    too_long = True
                    keep = i
                else:
                    keep = start
                self.pos = i
                if not self._more(keep):
                    raise Broken("the file ends inside an array element")
                start -= keep
                i, buf = self.pos, self.buf
                continue
            if in_string:
                i = _STRING_BODY.match(buf, i).end()  # type: ignore[union-attr]
                if i >= len(buf) or buf[i] == _BACKSLASH:
                    continue  # the string goes on in the next chunk
                in_string = False
                i += 1
                if depth == 0:
                    break
                continue
            m = _STRUCTURE.search(buf, i)
            if m is None:
                i = len(buf)
                continue
            j = m.start()
            c = buf[j]
            if c == _QUOTE:
                in_string = True
                i = j + 1
            elif c in b"[{":
                depth += 1
                i = j + 1
            elif c in b"]}":
                if depth == 0:  # the ] closing the array ends a scalar element
                    i = j
                    break
                depth -= 1
                i = j + 1
                if depth == 0:
                    break
            else:  # a comma
                if depth == 0:
                    i = j
                    break
                i = j + 1
        self.pos = i
        if too_long or i - start > self._limit:
            return None
        return buf[start:i]


def read_json_file(stream: IO[bytes], max_line_bytes: int) -> Iterator[RawRecord]:
    """The records of a JSON file: an array of objects, or one object (one record)."""
    if sniff(stream).startswith(codecs.BOM_UTF8):
        stream.read(len(codecs.BOM_UTF8))
    head = sniff(stream).lstrip(b" \t\r\n")
    if not head:
        raise UnreadableFile("the file is empty")
    if not head.startswith((b"{", b"[")):
        raise UnreadableFile("a JSON file must hold an array of objects (or one object)")
    # A single object is a one-record file.
    yield from read_json(stream, max_line_bytes, in_array=head.startswith(b"["))


def read_json(stream: IO[bytes], max_line_bytes: int, in_array: bool) -> Iterator[RawRecord]:
    """The records of a JSON array (``in_array``) or of a single-object document."""
    row = 0
    try:
        for element in _Scanner(stream, max_line_bytes).elements(in_array):
            row += 1
            if element is None:
                yield RawRecord(row, None, None,
                                f"the array element is longer than {max_line_bytes} bytes")
                continue
            try:
                data = orjson.loads(element)
            except orjson.JSONDecodeError as exc:
                yield RawRecord(row, None, {"_raw": _text(element)},
                                f"the array element is not valid JSON: {exc}")
                continue
            if isinstance(data, dict):
                yield RawRecord(row, data, None)
            else:
                yield RawRecord(row, None, {"_raw": _text(element)},
                                "the array element is not an object")
    except Broken as exc:
        yield RawRecord(row + 1, None, None, "the JSON document is invalid from here on, "
                        f"so the rest of the file was skipped: {exc}")


def _text(element: bytes) -> str:
    return element.decode("utf-8", "replace").strip()
