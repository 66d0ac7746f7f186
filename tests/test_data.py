import hashlib
import http.server
import threading
from functools import partial

import pytest

from adapterkit.data import files as data


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERKIT_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_offline_mirror_verified_and_cached(isolated, monkeypatch):
    """A mirror folder made here (no sibling folder needed): the copy is verified, then served from the cache."""
    body = b'{"queries": {}}'
    mirror = isolated / "mirror"
    (mirror / "qa").mkdir(parents=True)
    (mirror / "qa" / "small.json").write_bytes(body)
    monkeypatch.setenv("ADAPTERKIT_DATA_MIRROR", str(mirror))
    monkeypatch.setitem(
        data.FILES, "small.json", data.RemoteFile("qa/small.json", "http://127.0.0.1:9/none", hashlib.sha256(body).hexdigest())
    )
    path = data.get_file("small.json", download=False)
    assert path.parent == isolated / "cache" and path.read_bytes() == body
    (mirror / "qa" / "small.json").unlink()
    assert data.get_file("small.json", download=False) == path  # cached: the mirror is no longer needed


def test_missing_mirror_says_where_to_put_it(isolated, monkeypatch):
    monkeypatch.setenv("ADAPTERKIT_DATA_MIRROR", str(isolated / "empty"))
    with pytest.raises(FileNotFoundError, match="ADAPTERKIT_DATA_MIRROR"):
        data.get_file("uber_2021.pdf", download=False)


def test_corrupt_mirror_is_refused(isolated, monkeypatch):
    mirror = isolated / "mirror"
    (mirror / "llamaindex_qa/run-llama_finetune-embedding").mkdir(parents=True)
    (mirror / "llamaindex_qa/run-llama_finetune-embedding/train_dataset.json").write_text("{}")
    monkeypatch.setenv("ADAPTERKIT_DATA_MIRROR", str(mirror))
    with pytest.raises(ValueError, match="sha256"):
        data.get_file("train_dataset.json", download=False)


def test_unknown_name():
    with pytest.raises(KeyError, match="known files"):
        data.get_file("nope.pdf")


@pytest.fixture
def origin(tmp_path):
    """A local HTTP server standing in for the origin (the only remote part)."""
    root = tmp_path / "origin"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verified_then_mirror_fallback(isolated, origin, monkeypatch):
    root, base = origin
    body = b"hello 10-K"
    (root / "good.txt").write_bytes(body)
    (root / "changed.txt").write_bytes(b"tampered")
    monkeypatch.setitem(data.FILES, "good.txt", data.RemoteFile("x/good.txt", f"{base}/good.txt", hashlib.sha256(body).hexdigest()))
    got = data.get_file("good.txt", download=True)
    assert got.read_bytes() == body
    # A download whose checksum is wrong is discarded and the mirror is used.
    mirror = isolated / "mirror"
    (mirror / "x").mkdir(parents=True)
    (mirror / "x" / "changed.txt").write_bytes(body)
    monkeypatch.setenv("ADAPTERKIT_DATA_MIRROR", str(mirror))
    monkeypatch.setitem(
        data.FILES, "changed.txt", data.RemoteFile("x/changed.txt", f"{base}/changed.txt", hashlib.sha256(body).hexdigest())
    )
    assert data.get_file("changed.txt", download=True).read_bytes() == body


def test_data_dir_outside_a_checkout_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTERKIT_DATA_DIR", raising=False)
    assert data.data_dir() == data.REPO_ROOT / "data"  # this checkout
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "site-packages")  # as after `pip install git+...`
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.data_dir() == tmp_path / "xdg" / "adapterkit" / "data"
