"""The engine and its parts: options, loss, batches and negatives, pseudo-queries, epoch choice, checkpoints."""
