"""A real PostgreSQL server with pgvector on this machine, started from a pip package: nothing to install or run first.

``LocalPostgres`` runs the server binaries shipped in the ``pgserver`` wheel (PostgreSQL 16 with
pgvector 0.6) on a data folder, listening on a Unix socket inside it (no TCP port, so two servers never
clash), and stops it on exit. ``vector_store`` returns LlamaIndex's ``PGVectorStore`` on it. For a
remote database, build the store yourself; everything that reads a store takes any ``PGVectorStore``::

    PGVectorStore.from_params(host="db.example.com", port=5432, database="rag", user="me", password="...",
                              table_name="chunks", embed_dim=384)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import parse_qs, urlparse

# HNSW with cosine distance, pgvector's defaults (m 16, ef_construction 64, ef_search 40).
HNSW = {"hnsw_m": 16, "hnsw_ef_construction": 64, "hnsw_ef_search": 40, "hnsw_dist_method": "vector_cosine_ops"}


class LocalPostgres:
    """PostgreSQL + pgvector in ``folder`` (default: a temporary folder, deleted on ``stop``).

    Example::

        with LocalPostgres() as pg:
            store = pg.vector_store("uber_chunks", embed_dim=384)
            VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=model)
    """

    def __init__(self, folder: Union[str, os.PathLike, None] = None) -> None:
        self._temporary = folder is None
        self.folder = Path(folder) if folder is not None else None
        self._server: Any = None

    def start(self) -> "LocalPostgres":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
            try:
                import pgserver
            except ImportError as exc:
                raise ImportError("LocalPostgres needs the server binaries: pip install 'adapterkit[postgres]'.") from exc
            if self.folder is None:
                self.folder = Path(tempfile.mkdtemp(prefix="adapterkit-pg-"))
            self._server = pgserver.get_server(self.folder, cleanup_mode="stop")
        self._server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        return self

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def socket_dir(self) -> str:
        if self._server is None:
            raise RuntimeError("The server is not running: call start() (or use `with LocalPostgres() as pg:`).")
        return parse_qs(urlparse(self._server.get_uri()).query)["host"][0]

    def url(self, driver: str = "psycopg2", database: str = "postgres") -> str:
        """A SQLAlchemy URL of the server (``driver``: ``psycopg2`` or ``asyncpg``)."""
        return f"postgresql+{driver}://postgres@/{database}?host={self.socket_dir}"

    def vector_store(self, table_name: str, embed_dim: int, hnsw: bool = True, **kwargs: Any) -> Any:
        """LlamaIndex's ``PGVectorStore`` on this server; ``hnsw``: an HNSW index (approximate search) on the vectors."""
        from llama_index.vector_stores.postgres import PGVectorStore

        return PGVectorStore.from_params(connection_string=self.url(), async_connection_string=self.url("asyncpg"),
                                         table_name=table_name, embed_dim=embed_dim, hnsw_kwargs=HNSW if hnsw else None, **kwargs)

    def psql(self, command: str) -> str:
        """Run SQL through psql and return its output."""
        if self._server is None:
            raise RuntimeError("The server is not running: call start() first.")
        return self._server.psql(command)

    def stop(self, delete: Optional[bool] = None) -> None:
        """Stop the server; ``delete`` (default: when the folder was temporary) removes its data."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if (self._temporary if delete is None else delete) and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
