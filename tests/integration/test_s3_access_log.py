"""The S3 server's access log, which the two-days test uses to prove which files a run read:
whole and ranged reads both count, whatever colour werkzeug gives their status line."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from dnr.testing import parse_access_log

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def test_whole_and_ranged_reads_are_seen_and_failed_ones_are_not(s3_server, s3_lake):
    fs = s3_lake.filesystem()
    base = s3_lake.fs_path(s3_lake.uri("blobs"))
    for name in ("whole", "ranged", "untouched"):
        with fs.open_output_stream(f"{base}/{name}.bin") as out:
            out.write(bytes(range(256)) * 64)

    mark = s3_server.log_offset()
    with fs.open_input_stream(f"{base}/whole.bin") as f:
        assert len(f.read()) == 256 * 64
    with fs.open_input_file(f"{base}/ranged.bin") as f:
        assert f.read_at(16, 100) == bytes(range(100, 116))
    with pytest.raises(FileNotFoundError):
        fs.open_input_stream(f"{base}/missing.bin").read()

    reads = [r for r in s3_server.requests(mark) if r.path.startswith(base)]
    statuses = {(r.path.rsplit("/", 1)[1], r.method, r.status) for r in reads}
    assert ("ranged.bin", "GET", 206) in statuses  # the line werkzeug colours magenta
    assert any(name == "missing.bin" and status == 404 for name, _, status in statuses)
    assert s3_server.objects_read(base, since=mark) == {f"{base}/whole.bin", f"{base}/ranged.bin"}


def test_colour_codes_a_partial_line_and_a_banner():
    lines = [
        b" * Running on http://127.0.0.1:5000\n",
        b'127.0.0.1 - - [21/Nov/2026 07:00:16] "GET /b/k%3D1/part.parquet HTTP/1.1" 200 -\n',
        b'127.0.0.1 - - [21/Nov/2026 07:00:16] "\x1b[35m\x1b[1mGET /b/k=2 HTTP/1.1\x1b[0m" 206 -\n',
        b'127.0.0.1 - - [21/Nov/2026 07:00:16] "\x1b[33mGET /b/gone HTTP/1.1\x1b[0m" 404 -\n',
        b'127.0.0.1 - - [21/Nov/2026 07:00:17] "GET /b/half HTTP/1.1" 200',  # still being written
    ]
    assert [(r.method, r.path, r.status) for r in parse_access_log(lines)] == [
        ("GET", "b/k=1/part.parquet", 200), ("GET", "b/k=2", 206), ("GET", "b/gone", 404)]
