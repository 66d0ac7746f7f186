"""Where the chunks to search come from: a folder of documents or a vector store the user already has.

``chunks_from_folder`` reads documents (``adapterkit.data.folders``); ``chunks_from_store`` reads
``(id, text, vector)`` rows from PostgreSQL/pgvector or Qdrant and puts the stored vectors into the
embedding cache under the base model's identity, so no stored chunk is embedded again. Both give a
``ChunkSource``: the corpus plus what identifies it (file hashes, or the store's URI), which is what a
re-run compares to say what changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Union
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.cache import EmbeddingCache
from adapterkit.data.folders import read_folder
from adapterkit.stores.stored_vectors import VERIFY_ROWS

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class ChunkSource:
    """The corpus a model will search, and where it came from.

    Attributes:
        corpus: ``{chunk id: text}``.
        origin: the folder (absolute path) or the store URI (password removed).
        files: ``{name: content hash}`` per file (folders) or ``{}`` (stores: compared chunk by chunk).
        chunks_of: ``{name: [chunk ids]}`` per file.
        skipped: ``{name: reason}`` for files not read.
        store: the vector store object the chunks were read from (None for folders).
        stored: how many chunks the store holds, when ``corpus`` is a sample of them (None: all were read).
    """

    corpus: Dict[str, str]
    origin: str
    files: Dict[str, str] = field(default_factory=dict)
    chunks_of: Dict[str, List[str]] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    store: Any = None
    stored: Optional[int] = None


def check_chunking(chunk_size: Any, chunk_overlap: Any) -> None:
    """Chunk settings a splitter can use: whole numbers, a size of at least 1, an overlap below it."""
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (chunk_size, chunk_overlap))
    if not whole or chunk_size < 1 or not 0 <= chunk_overlap < chunk_size:
        raise ValueError(
            f"chunk_size must be a whole number >= 1 and chunk_overlap one in [0, chunk_size) (defaults 1024 and "
            f"200); got {chunk_size!r} and {chunk_overlap!r}."
        )


def chunks_from_folder(
    folder: PathLike, chunk_size: int = 1024, chunk_overlap: int = 200, show_progress: bool = True, follow_symlinks: bool = False
) -> ChunkSource:
    """Every readable document under ``folder``, chunked with content-based ids (``read_folder``)."""
    check_chunking(chunk_size, chunk_overlap)
    found = read_folder(
        folder, chunk_size=chunk_size, chunk_overlap=chunk_overlap, show_progress=show_progress, follow_symlinks=follow_symlinks
    )
    return ChunkSource(found.corpus, str(os.path.abspath(folder)), found.files, found.chunks_of, found.skipped)


def open_store(uri: str, create: bool = False) -> Any:
    """A LlamaIndex vector store for a URI (``create``: a local Qdrant folder or collection that does not
    exist yet is made, for writing an index; otherwise it is an error).

    - ``postgresql://user:password@host:port/database?table=NAME`` (LlamaIndex's ``PGVectorStore``;
      ``table`` is the name given to it, without the ``data_`` prefix it adds; ``embed_dim`` (default
      384) its vector size; other parameters, such as ``host=/socket/dir`` or ``sslmode``, go to the driver);
    - ``qdrant:///path/to/folder?collection=NAME`` (local Qdrant) or ``qdrant+http://host:6333?collection=NAME``.
    """
    parsed = urlparse(uri)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    if parsed.scheme in ("postgresql", "postgres"):
        if not query.get("table"):
            raise ValueError(f"{redact(uri)}: name the table, e.g. postgresql://user@host:5432/db?table=my_chunks.")
        from adapterkit.stores.postgres import STORE_PREFIX, check_pg_name

        # PGVectorStore lower-cases the name and reads table data_NAME; the name only ever reaches SQL quoted
        check_pg_name(query["table"].lower(), f"{redact(uri)}: the table name", room=len(STORE_PREFIX))
        try:
            from llama_index.vector_stores.postgres import PGVectorStore
        except ImportError as exc:
            raise ImportError("postgresql:// stores need LlamaIndex's pgvector store: pip install 'adapterkit[postgres]'") from exc
        rest = urlencode({k: v for k, v in query.items() if k not in ("table", "embed_dim")})  # e.g. host=/socket/dir, sslmode
        server = parsed._replace(query=rest)
        return PGVectorStore.from_params(
            connection_string=urlunparse(server._replace(scheme="postgresql+psycopg2")),
            async_connection_string=urlunparse(server._replace(scheme="postgresql+asyncpg")),
            table_name=query["table"],
            embed_dim=int(query.get("embed_dim", 384)),
        )
    if parsed.scheme in ("qdrant", "qdrant+http", "qdrant+https"):
        if not query.get("collection"):
            raise ValueError(f"{redact(uri)}: name the collection, e.g. qdrant:///data/qdrant?collection=my_chunks.")
        try:
            from llama_index.vector_stores.qdrant import QdrantVectorStore
            from qdrant_client import QdrantClient
        except ImportError as exc:
            raise ImportError("qdrant stores need qdrant-client and LlamaIndex's Qdrant store: pip install 'adapterkit[local]'") from exc
        unknown = sorted(set(query) - {"collection", "api_key"})
        if unknown:
            raise ValueError(f"{redact(uri)}: unknown parameter(s) {unknown}; qdrant URIs take collection= and, for a server, api_key=.")
        if parsed.scheme == "qdrant":
            if parsed.netloc or "api_key" in query:
                raise ValueError(
                    f"{redact(uri)} names a host or a key, but qdrant:// is a local folder (three slashes: "
                    "qdrant:///path?collection=NAME); a server is qdrant+http://host:6333?collection=NAME."
                )
            if create and parsed.path and not os.path.exists(parsed.path):
                os.makedirs(parsed.path)
            fresh = create and parsed.path and os.path.isdir(parsed.path) and not os.listdir(parsed.path)
            if not fresh and (
                not parsed.path or not os.path.isfile(os.path.join(parsed.path, "meta.json"))
            ):  # QdrantClient(path=...) would make one
                raise ValueError(
                    f"{redact(uri)}: there is no Qdrant folder at {parsed.path or '(no path)'} (a local Qdrant store "
                    "holds meta.json); give the folder that holds the store, e.g. qdrant:///data/qdrant?collection=NAME."
                )
            client = QdrantClient(path=parsed.path)
        else:
            if not parsed.hostname:
                raise ValueError(f"{redact(uri)} names no server: qdrant+http://host:6333?collection=NAME.")
            client = QdrantClient(url=f"{parsed.scheme.split('+')[1]}://{parsed.netloc}", api_key=query.get("api_key"), timeout=10)
        try:
            exists = client.collection_exists(query["collection"])
            names = [] if exists else [c.name for c in client.get_collections().collections]
        except Exception as exc:  # a server that cannot be reached, refuses the key, or is not Qdrant
            client.close()
            raise ConnectionError(
                f"Could not reach the Qdrant store {redact(uri)} ({type(exc).__name__}: {str(exc).strip()[:200]}): "
                "check the address and that the server is running."
            ) from None
        if not exists and not create:
            client.close()
            raise ValueError(f"{redact(uri)}: there is no collection {query['collection']!r}; it has {names}.")
        return QdrantVectorStore(client=client, collection_name=query["collection"])
    raise ValueError(f"Unknown store URI {redact(uri)!r}: use postgresql://...?table=NAME or qdrant:///path?collection=NAME.")


SECRET_PARAMETERS = ("password", "sslpassword", "api_key", "apikey", "token")


def redact(uri: str) -> str:
    """``uri`` without its secrets (the password, and parameters such as ``password=`` or ``api_key=``):
    what reports, ``fit.json`` and error messages show."""
    parsed = urlparse(uri)
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1) if parsed.password else parsed.netloc
    query = "&".join(
        f"{k}=***" if k.lower() in SECRET_PARAMETERS else f"{k}={v}"
        for k, v in (part.partition("=")[::2] for part in parsed.query.split("&") if part)
    )
    return urlunparse(parsed._replace(netloc=netloc, query=query))


def chunks_from_store(
    uri_or_store: Any,
    embed_model: BaseEmbedding,
    cache: Union[EmbeddingCache, PathLike, None] = None,
    verify: int = VERIFY_ROWS,
    show_progress: bool = True,
) -> ChunkSource:
    """Every chunk of a vector store; its stored vectors enter the embedding cache, none is re-embedded.

    A seeded sample of ``verify`` chunks is embedded again to check that ``embed_model`` made the stored
    vectors (a store built by another model is an error that says so, and nothing of it is cached).
    """
    from adapterkit.stores.stored_vectors import cache_stored_vectors

    return _read_store(
        uri_or_store,
        lambda store: (cache_stored_vectors(store, embed_model, cache=cache, verify=verify, show_progress=show_progress), None),
    )


def sample_from_store(
    uri_or_store: Any,
    embed_model: BaseEmbedding,
    keep: Set[str],
    sample: int,
    cache: Union[EmbeddingCache, PathLike, None] = None,
    seed: int = 0,
    verify: int = VERIFY_ROWS,
    show_progress: bool = True,
) -> ChunkSource:
    """The chunks ``keep`` names and ``sample`` others of a store (``sample_stored_corpus``): what training
    needs of a store too large to hold; ``stored`` says how many chunks the store has."""
    from adapterkit.stores.training_sample import sample_stored_corpus

    def read(store: Any) -> tuple:
        drawn = sample_stored_corpus(
            store, embed_model, keep, sample=sample, cache=cache, seed=seed, verify=verify, show_progress=show_progress
        )
        return drawn.corpus, drawn.rows

    return _read_store(uri_or_store, read)


def _read_store(uri_or_store: Any, read: Callable[[Any], tuple]) -> ChunkSource:
    """Open a store URI (or take a store object) and ``read`` it: ``(corpus, stored count or None)``."""
    uri = uri_or_store if isinstance(uri_or_store, str) else None
    store = open_store(uri) if uri else uri_or_store
    try:
        corpus, stored = read(store)
    except ValueError:
        if uri:
            close_store(store)
        raise
    except Exception as exc:  # the server went away, wrong credentials, ...
        if uri:
            close_store(store)
        where = redact(uri) if uri else store_origin(store)
        raise ConnectionError(
            f"Could not read the chunks of {where}: {type(exc).__name__}: {exc}. "
            "Check the URI, the credentials and that the server is running."
        ) from exc
    return ChunkSource(corpus, redact(uri) if uri else store_origin(store), store=store, stored=stored)


def close_store(store: Any) -> None:
    """Close a Qdrant store's client: a local Qdrant folder stays locked while a client holds it open.
    (A PostgreSQL store's connections are pooled and closed with it.)"""
    if type(store).__name__ == "QdrantVectorStore":
        store.client.close()


def store_origin(store: Any) -> str:
    """What a store object is, for reports and for telling two stores apart: its class, its server (no
    password) and its table or collection."""
    parts = [type(store).__name__]
    server = _server_of(store)
    if server:
        parts.append(redact(server))
    name = getattr(store, "table_name", None) or getattr(store, "collection_name", None)
    if name:
        parts.append(f"/{name}")
    return " ".join(parts)


def _server_of(store: Any) -> Optional[str]:
    """A store's server: a connection string or URL, else what its client was opened on (Qdrant's host,
    URL or local folder, from the client's ``init_options``)."""
    connection = getattr(store, "connection_string", None) or getattr(store, "url", None)
    if connection:
        return str(connection)
    options = getattr(getattr(store, "client", None), "init_options", None)
    if isinstance(options, dict):
        for key in ("url", "host", "location", "path"):
            if options.get(key):
                port = options.get("port") if key == "host" else None
                return f"{options[key]}:{port}" if port else str(options[key])
    return None


def source_of(
    docs: Optional[PathLike],
    store: Any,
    embed_model: BaseEmbedding,
    cache: Any,
    chunk_size: int,
    chunk_overlap: int,
    show_progress: bool,
    follow_symlinks: bool = False,
) -> ChunkSource:
    """One of a folder or a store (exactly one must be given)."""
    if (docs is None) == (store is None):
        raise ValueError("Give either a documents folder or a store URI (--store), not both and not neither.")
    if docs is not None:
        return chunks_from_folder(docs, chunk_size, chunk_overlap, show_progress, follow_symlinks)
    return chunks_from_store(store, embed_model, cache=cache, show_progress=show_progress)
