"""Corpus memories: keys that pull a query toward a chunk's frozen vector, and how keys are looked up."""
