"""Embedding on a local multi-process Dask cluster: a worker killed mid-batch loses that batch only."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from pathlib import Path

import helpers
import numpy as np
import pytest
from dask.distributed import Client, LocalCluster

from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.cluster import embed_on_cluster
from adapterkit.data.documents import chunk_sentences
from conftest import take


def _kill_the_slow_worker(log: Path, stop: threading.Event, errors: list) -> None:
    """Wait for the batch that waits, then SIGKILL its worker process."""
    try:
        while not stop.is_set():
            if (log / "slow.pid").exists():
                time.sleep(0.5)  # let it settle into its wait
                os.kill(int((log / "slow.pid").read_text()), signal.SIGKILL)
                return
            time.sleep(0.05)
    except Exception as exc:  # noqa: BLE001 - seen by the test, not lost in a thread
        errors.append(exc)


def test_a_worker_killed_mid_batch_loses_that_batch_only(tmp_path, monkeypatch, val_full, bge):
    log = tmp_path / "tasks"
    log.mkdir()
    monkeypatch.setenv("ADAPTERKIT_TEST_TASK_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")] if p))
    sentences = list(dict.fromkeys(s for text in take(val_full, 8).corpus.values() for s in chunk_sentences(text)))
    texts = sentences + ["SLOW."]  # the shortest text: in the first batch, so its worker has finished nothing yet
    cache = EmbeddingCache(tmp_path / "cache")
    stop = threading.Event()
    errors: list = []
    killer = threading.Thread(target=_kill_the_slow_worker, args=(log, stop, errors), daemon=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        killer.start()
        try:
            counts = embed_on_cluster(client, helpers.marked_bge, texts, kind="query", cache=cache, batch_size=4, in_flight=2)
        finally:
            stop.set()
        assert (log / "slow.pid").exists() and not errors  # a worker was killed mid-batch
        assert counts["embedded"] == len(texts) and counts["batches"] == -(-len(texts) // 4)
        starts = collections.Counter(line for f in log.glob("*.log") for line in f.read_text().splitlines())
        assert sum(starts.values()) == counts["batches"] + 1  # every batch ran once, the killed one twice
        assert [line.endswith("True") for line, n in starts.items() if n == 2] == [True]

        # nothing lost: every vector is in the cache, and equals the model's own; a re-run sends nothing
        fresh = embed_texts(bge, texts, "query", cache=EmbeddingCache(tmp_path / "fresh"))
        assert np.allclose(embed_texts(helpers.marked_bge(), texts, "query", cache=cache), fresh, atol=1e-5)
        again = embed_on_cluster(client, helpers.marked_bge, texts, kind="query", cache=cache, batch_size=4)
        assert again["embedded"] == 0 and again["cached"] == len(texts)

        # a batch that fails on the workers: every other batch lands first; a re-run embeds only the failed batch's texts
        more = [f"{s} (again, reworded)" for s in sentences]
        more.append("FAIL, the longest text, so sent last, raises on the worker: " + max(more, key=len))
        with pytest.raises(RuntimeError, match="run embed_on_cluster again"):
            embed_on_cluster(client, helpers.marked_bge, more, kind="query", cache=cache, batch_size=4, in_flight=1)
        rest = embed_on_cluster(client, helpers.marked_bge, more[:-1], kind="query", cache=cache, batch_size=4)
        assert rest["embedded"] == (len(more) % 4 or 4) - 1  # the failed batch's other texts (it was the last batch)
