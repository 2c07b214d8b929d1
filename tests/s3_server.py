"""moto's standalone S3 server on 127.0.0.1, for tests that need a real S3 API.

The server is a separate process (`python -m moto.server`) on a free loopback
port; clients find it through the standard variables: AWS_ENDPOINT_URL (read
by botocore, so by s3fs and boto3) and fake AWS_* credentials. Subprocesses
(torchrun ranks) inherit them.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"moto server exited with {process.returncode}: {log.read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # it answered (e.g. 403 when it checks credentials)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer on {url} within {seconds} s")


@contextmanager
def moto_server(seconds: float = 60, check_credentials: bool = False) -> Iterator[str]:
    """Start the server, yield its endpoint URL, stop it. `check_credentials`: it refuses
    every request whose credentials its IAM does not know (s3_environment's fake ones)."""
    env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_credentials else {})}
    for _ in range(3):  # the port may be taken between choosing and binding it
        url = f"http://{HOST}:{free_port()}"
        # Its request log goes to a file: a pipe nobody reads would fill and stall the server.
        log = tempfile.TemporaryFile(mode="w+")
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", url.rsplit(":", 1)[1]],
                                   stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            _wait_until_up(url, process, log, seconds)
        except RuntimeError:
            process.kill()
            process.wait()
            log.close()
            continue
        try:
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        return
    raise RuntimeError("could not start the moto server")


def s3_environment(endpoint: str) -> dict[str, str]:
    """What a client needs to reach the server: the endpoint and fake credentials."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
