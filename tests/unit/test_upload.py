"""api/upload.py: the stored upload lives exactly as long as a job needs it.

A real multipart body is fed through the streaming parser into real storage on
``tmp_path``; the tests look at the upload directory after each way a block can
end: kept by a job, ended without a job, failed, cancelled, or a body that never
completed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect, Request

from bulkport.api.upload import Upload, stored_upload
from bulkport.errors import BadRequest, PayloadTooLarge
from bulkport.storage import LocalStorage

CSV = b"email,name,role\na@example.com,A,admin\n"
Block = Callable[[Upload], Awaitable[None]]


def body(*parts: tuple[str, str | None, bytes], boundary: str = "B") -> bytes:
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"'
                                                     if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


GOOD = body(("resource", None, b"users"), ("file", "u.csv", CSV))


def request(raw: bytes, *, chunk: int = 7, disconnect_after: int | None = None) -> Request:
    """A request whose body arrives in ``chunk``-byte pieces (then, optionally, a hang-up)."""
    pieces = [raw[i:i + chunk] for i in range(0, len(raw), chunk)] or [b""]
    if disconnect_after is not None:
        pieces = pieces[:disconnect_after]
    sent = 0

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent == len(pieces):
            return {"type": "http.disconnect"}
        sent += 1
        more = sent < len(pieces) or disconnect_after is not None
        return {"type": "http.request", "body": pieces[sent - 1], "more_body": more}

    scope = {"type": "http", "method": "POST", "path": "/v1/imports", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=B")]}
    return Request(scope, receive)


def files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def run(storage: LocalStorage, req: Request, block: Block, *, max_bytes: int = 10_000) -> None:
    async def main() -> None:
        async with stored_upload(req, storage, max_bytes=max_bytes) as upload:
            await block(upload)

    asyncio.run(main())


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "uploads")


def test_a_kept_upload_stays_with_its_content(storage: LocalStorage) -> None:
    seen: list[Upload] = []

    async def block(upload: Upload) -> None:
        seen.append(upload)
        upload.keep()

    run(storage, request(GOOD), block)
    (upload,) = seen
    assert upload.fields == {"resource": "users"} and upload.filename == "u.csv"
    assert files(storage.root) == [upload.stored.key]
    assert storage.path(upload.stored.key).read_bytes() == CSV
    assert upload.stored.size == len(CSV)


def test_a_block_that_ends_without_keep_leaves_no_file(storage: LocalStorage) -> None:
    seen: list[str] = []

    async def block(upload: Upload) -> None:
        seen.append(upload.stored.key)
        assert storage.path(upload.stored.key).is_file()  # stored while the block runs

    run(storage, request(GOOD), block)
    assert len(seen) == 1
    assert files(storage.root) == []


def test_a_failing_block_deletes_the_file_and_the_error_goes_on(storage: LocalStorage) -> None:
    async def block(upload: Upload) -> None:
        raise BadRequest("the uploaded file is empty")

    with pytest.raises(BadRequest, match="empty"):
        run(storage, request(GOOD), block)
    assert files(storage.root) == []


def test_a_failure_before_keep_deletes_even_a_file_about_to_be_kept(
        storage: LocalStorage) -> None:
    async def block(upload: Upload) -> None:
        raise RuntimeError("the job could not be created")
        upload.keep()  # never reached

    with pytest.raises(RuntimeError):
        run(storage, request(GOOD), block)
    assert files(storage.root) == []


def test_a_failure_after_keep_leaves_the_jobs_file(storage: LocalStorage) -> None:
    """Once a job took the file, a later failure (shaping the reply) must not delete it."""
    async def block(upload: Upload) -> None:
        upload.keep()
        raise RuntimeError("the reply could not be built")

    with pytest.raises(RuntimeError):
        run(storage, request(GOOD), block)
    assert len(files(storage.root)) == 1


def test_a_cancelled_block_deletes_the_file(storage: LocalStorage) -> None:
    async def block(upload: Upload) -> None:
        await asyncio.sleep(3600)  # cancelled below: the request is gone

    async def main() -> None:
        async def take() -> None:
            async with stored_upload(request(GOOD), storage, max_bytes=10_000) as upload:
                await block(upload)

        task = asyncio.create_task(take())
        await asyncio.sleep(0.2)
        assert len(files(storage.root)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert files(storage.root) == []


def test_a_client_hanging_up_mid_upload_leaves_no_partial_file(storage: LocalStorage) -> None:
    entered: list[Upload] = []

    async def block(upload: Upload) -> None:
        entered.append(upload)

    with pytest.raises(ClientDisconnect):
        run(storage, request(GOOD, disconnect_after=5), block)
    assert entered == []
    assert files(storage.root) == []


@pytest.mark.parametrize(("raw", "error", "fragment"), [
    (body(("resource", None, b"users")), BadRequest, "needs a 'file' part"),
    (GOOD[:-10], BadRequest, "ends before its closing boundary"),
    (body(("resource", None, b"users"), ("resource", None, b"users"), ("file", "u.csv", CSV)),
     BadRequest, "given twice"),
    (body(("file", "u.csv", CSV * 1000)), PayloadTooLarge, "larger than the limit"),
])
def test_a_body_that_fails_to_parse_leaves_no_file(storage: LocalStorage, raw: bytes,
                                                   error: type[Exception],
                                                   fragment: str) -> None:
    entered: list[Upload] = []

    async def block(upload: Upload) -> None:
        entered.append(upload)

    with pytest.raises(error, match=fragment):
        run(storage, request(raw), block)
    assert entered == []
    assert files(storage.root) == []
