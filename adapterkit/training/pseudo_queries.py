"""Label-free pseudo-queries of a target corpus: its sentences, or questions an LLM writes about each chunk."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from adapterkit.data.documents import chunk_sentences


def pseudo_queries(
    corpus: Dict[str, str],
    per_chunk: int = 4,
    words: Optional[Tuple[int, int]] = None,
    min_words: int = 6,
    max_sentences: int = 2,
    seed: int = 0,
) -> List[tuple]:
    """Label-free training pairs from a target corpus: a piece of a chunk as the query, the chunk as positive.

    Args:
        corpus: ``{chunk id: text}``.
        per_chunk: pairs drawn from each chunk.
        words: ``(shortest, longest)``: the query is a window of that many consecutive words
            (question-sized), at a random place. None: one to ``max_sentences`` whole sentences of at
            least ``min_words`` words instead.
        seed: the same seed gives the same pairs. Each chunk draws from its own stream, seeded by the seed
            and its id, so a chunk's queries do not change when other chunks are added or removed (a
            re-run on an edited folder embeds no new query for an unchanged chunk).

    Returns ``[(query text, chunk id)]``; chunks too short for one query give none.
    """
    if words is not None and not 1 <= words[0] <= words[1]:
        raise ValueError(f"words must be (shortest, longest) with 1 <= shortest <= longest, got {words}.")
    pairs = []
    for doc_id, text in corpus.items():
        rng = random.Random(f"{seed}:{doc_id}")  # a str seed is hashed with sha512: the same on every run
        if words is not None:
            tokens = text.split()
            if len(tokens) < words[0]:
                continue
            for _ in range(per_chunk):
                n = min(rng.randint(*words), len(tokens))
                start = rng.randrange(len(tokens) - n + 1)
                pairs.append((" ".join(tokens[start : start + n]), doc_id))
            continue
        sentences = chunk_sentences(text, min_words)
        for start in rng.sample(range(len(sentences)), min(per_chunk, len(sentences))):
            pairs.append((" ".join(sentences[start : start + rng.randint(1, max_sentences)]), doc_id))
    return pairs


def generated_pseudo_queries(
    corpus: Dict[str, str], llm: Any, per_chunk: int, output_path: Path, show_progress: bool = True
) -> List[tuple]:
    """Label-free training pairs asked of an LLM: ``[(question, chunk id)]``, resumable at ``output_path``."""
    from adapterkit.data.questions import (
        generate_qa_embedding_pairs,  # LLM machinery only when asked for
    )

    generated = generate_qa_embedding_pairs(
        corpus, llm=llm, num_questions_per_chunk=per_chunk, output_path=output_path, verbose=show_progress
    )
    return [(question, generated.relevant_docs[qid][0]) for qid, question in generated.queries.items()]
