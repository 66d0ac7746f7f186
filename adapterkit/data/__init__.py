"""Data in: files (sha256-verified), datasets, documents and chunks, question sets and question generation, splits."""
