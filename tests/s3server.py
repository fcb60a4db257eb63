"""An S3 API server (moto) on loopback for tests of object-store code paths: real HTTP, real s3fs, no mocks.

``s3_server()`` starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 with a port the OS
picks, creates a bucket, and yields the fsspec ``storage_options`` that point s3fs at it
(dummy credentials passed explicitly, nothing set in the environment). The server is
stopped when the block ends. Its state lives in this process's memory, in moto's
module-level backends, which every moto server in the process shares: the server is
reset (moto's ``/moto-api/reset``) at start and end, so each block starts empty. Other
processes (drivers racing in subprocesses) reach it over HTTP with the same options.
"""
from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator

import s3fs
from moto.server import ThreadedMotoServer

BUCKET = "cliper-test"


@contextlib.contextmanager
def s3_server(bucket: str = BUCKET) -> Iterator[dict]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        _reset(f"http://{host}:{port}")
        options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "eu-west-1"},
            "skip_instance_cache": True,  # one filesystem per server: no listing cached from an earlier test's server
        }
        s3fs.S3FileSystem(**options).mkdir(bucket)
        yield options
        _reset(f"http://{host}:{port}")
    finally:
        server.stop()


def _reset(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
