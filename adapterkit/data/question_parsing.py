"""Usable questions in an LLM's answer: list markers, markdown and preambles removed, loops dropped.

Small models answer untidily ("Here are 2 questions:", "1. **What...**", a last line cut by the token
limit, "What is the text about?"); ``parse_questions`` keeps only questions that can pick out a chunk.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import List, Optional

__all__ = ["answer_pieces", "parse_questions"]

# Leading list markers and labels: "1.", "1)", "(1)", "- ", "* ", "• ", "> ", "Q1:", "Question 1:", "Q:".
_PREFIX = re.compile(r"^\s*(?:[-*•+>#]+\s*|\(?\d{1,3}[.):\]](?!\d)\s*|q(?:uestion)?\s*\d*\s*[.:)\-]\s*)", re.I)
_QUESTION_START = re.compile(
    r"^(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|do|does|did|can|could|should|would"
    r"|will|has|have|had|may|might|(?:in|to|for|by|on|at|from|of|with|under|during) (?:what|which|whom|how)"
    r"|according to)\b",
    re.I,
)
# A question about "the text" (or about the questions asked for) cannot pick out its chunk from any
# other: useless as a retrieval query.
_GENERIC = re.compile(r"\b(?:(?:the|this|above|given) (?:text|passage|excerpt|article)|questions?)\b", re.I)
_NUMBER_RUN = re.compile(r"(?:\b\d[\d,.]*\s+){4}")
_QUOTES = "\"'“”‘’`"


def _clean(piece: str) -> str:
    piece = " ".join(piece.replace("**", "").replace("__", "").split())  # also turns no-break spaces into spaces
    while True:
        stripped = _PREFIX.sub("", piece, count=1).strip().strip(_QUOTES).strip()
        if stripped == piece:
            return piece
        piece = stripped


def answer_pieces(text: str) -> List[str]:
    """Every non-empty piece of an answer: one per line, and one per question on a line with several."""
    pieces = []
    for line in text.splitlines():
        for piece in re.split(r"(?<=\?)\s+", _clean(line)):
            piece = _clean(piece)
            if piece:
                pieces.append(piece)
    return pieces


def _degenerate(piece: str) -> bool:
    """Greedy decoding of a small model can loop: "of the 2nd section of the 2nd section", "2030 2031 2032 2033"."""
    words = piece.lower().split()
    pairs = Counter(zip(words, words[1:]))
    return (bool(pairs) and max(pairs.values()) >= 3) or bool(_NUMBER_RUN.search(piece))


def _as_question(piece: str) -> Optional[str]:
    if len(piece.split()) < 3 or _GENERIC.search(piece) or _degenerate(piece):
        return None
    if piece.endswith("?"):
        return piece
    if _QUESTION_START.match(piece):  # a question whose "?" the model forgot
        return piece.rstrip(" .:;,") + "?"
    return None


def parse_questions(text: str) -> List[str]:
    """Usable questions in an LLM's answer, in order, without duplicates.

    Handles numbered and bulleted lists ("1.", "1)", "- ", "* ", "Q1:", "Question 1:"), markdown
    bold, quotes, and several questions on one line. Keeps a piece that ends with "?" or starts with
    a question word (adding the "?"); drops preambles, answers, duplicates, questions of fewer than
    three words, looping ones, a last line cut short by the token limit, and questions about "the
    text" or "the questions" (they match every chunk equally).

    Example::

        >>> parse_questions('Here are 2 questions:\\n1. **What is Lyft?**\\n2) "When did it launch?"')
        ['What is Lyft?', 'When did it launch?']
    """
    pieces = answer_pieces(text)
    if len(pieces) > 1 and not pieces[-1].endswith("?") and any(p.endswith("?") for p in pieces):
        pieces.pop()  # the model ends its questions with "?": a last one without is cut by max_new_tokens
    questions: List[str] = []
    seen: List[str] = []
    for piece in pieces:
        question = _as_question(piece)
        key = re.sub(r"\W+", " ", question.lower()).strip() if question else ""
        # a question that starts another one (or the reverse) is the same one, once cut short
        if question and not any(k.startswith(key) or key.startswith(k) for k in seen):
            seen.append(key)
            questions.append(question)
    return questions
