"""Vector stores: indexes built with the base model, vectors read back from pgvector or Qdrant, a local PostgreSQL."""
