"""LocalStorage.open_read(key, start, end): a byte range that reports file offsets."""

from __future__ import annotations

from pathlib import Path

from bulkport.storage import LocalStorage


def test_a_range_reads_its_bytes_and_tells_file_offsets(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    data = bytes(range(256)) * 40
    (tmp_path / "k").write_bytes(data)
    with storage.open_read("k", 100, 5000) as f:
        assert f.tell() == 100
        assert f.read(10) == data[100:110]
        assert f.tell() == 110
        assert f.read() == data[110:5000]
        assert f.tell() == 5000
        assert f.read() == b""
    with storage.open_read("k", 9000) as f:
        assert f.read() == data[9000:]
    with storage.open_read("k", 10, 10) as f:
        assert f.read() == b""
