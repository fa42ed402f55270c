"""Fixtures of the upload tests: one real Ceph RGW per test session (per xdist worker),
a fresh bucket per test, and the agent's database, ledger and store in a temp dir."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.settings import UploadSettings
from agent.store.db import Database
from agent.store.ledger import Ledger
from agent.store.signing import CheckpointSigner
from agent.upload.s3client import S3Client, S3Config
from agent.upload.uploader import Uploader
from hw_sim import rgw as rgw_mod

from .upload_helpers import DOCK, RETENTION, UPLOAD

_buckets = itertools.count(1)


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rgw_mod.Rgw]:
    if not rgw_mod.available():
        pytest.fail("Ceph RGW is not installed; ./scripts/test installs it")
    yield rgw_mod.shared(tmp_path_factory.getbasetemp())
    rgw_mod.release()


@pytest.fixture
def bucket(rgw: rgw_mod.Rgw) -> str:
    name = f"t{os.getpid()}-{next(_buckets)}"
    S3Client(S3Config(rgw.endpoint, name, rgw.access_key, rgw.secret_key, rgw.region)
             ).create_bucket()
    return name


@pytest.fixture
def s3conf(rgw: rgw_mod.Rgw, bucket: str) -> S3Config:
    return S3Config(rgw.endpoint, bucket, rgw.access_key, rgw.secret_key, rgw.region,
                    timeout_s=10)


@pytest.fixture
def s3(s3conf: S3Config) -> S3Client:
    return S3Client(s3conf)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(DOCK, CheckpointSigner.from_file(tmp_path / "keys" / "dock.key"))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "evidence"
    root.mkdir()
    return root




@pytest.fixture
def make_uploader(db: Database, ledger: Ledger, store: Path, s3conf: S3Config
                  ) -> Iterator[Callable[..., Uploader]]:
    made: list[Uploader] = []

    def make(conf: S3Config | None = None, settings: UploadSettings = UPLOAD,
             **kw: object) -> Uploader:
        c = conf or s3conf
        up = Uploader(db, ledger, store, settings, RETENTION, lambda: S3Client(c), **kw)  # type: ignore[arg-type]
        made.append(up)
        return up

    yield make
    for u in made:
        u.close()
