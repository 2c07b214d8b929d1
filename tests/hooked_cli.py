"""`hskcache` as a subprocess for tests (under torchrun): the test's chunk size, and
optionally a SIGKILL of one rank right after its k-th chunk commit, or the store's creation
held until TEST_CREATE_PARTIES processes wait at the folder TEST_CREATE_BARRIER (they then create it together).

    TEST_CHUNK_BYTES=24000 TEST_KILL_RANK=1 TEST_KILL_AFTER=2 torchrun ... -m hooked_cli extract ...
"""
import os
import signal
import sys
import time
from pathlib import Path

from hskcache.storage import layout

from hskcache.store import group as store
from hskcache.cli.main import main

layout.CHUNK_TARGET_BYTES = int(os.environ.get("TEST_CHUNK_BYTES", layout.CHUNK_TARGET_BYTES))
if os.environ.get("TEST_KILL_RANK") == os.environ.get("RANK", "0"):
    commit, left = store.StoreWriter._commit, [int(os.environ["TEST_KILL_AFTER"])]

    def commit_then_die(self, chunk, block):
        commit(self, chunk, block)
        left[0] -= 1
        if left[0] == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    store.StoreWriter._commit = commit_then_die
if "TEST_CREATE_BARRIER" in os.environ:  # writers started apart create the store at the same instant
    create = store.StoreWriter.create

    def create_together(*args, **kwargs):
        barrier, parties = Path(os.environ["TEST_CREATE_BARRIER"]), int(os.environ["TEST_CREATE_PARTIES"])
        (barrier / str(os.getpid())).touch()
        while len(list(barrier.iterdir())) < parties:
            time.sleep(0.001)
        return create(*args, **kwargs)

    store.StoreWriter.create = create_together
sys.exit(main(sys.argv[1:]))
