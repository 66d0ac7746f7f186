"""``AdapterkitError``: the base of every error adapterkit raises on purpose.

``except AdapterkitError`` catches them all. Each subclass also keeps its builtin kind
(``ValueError`` for input the user can fix, ``RuntimeError`` for a run that cannot go on), so code
that catches those still works.
"""

from __future__ import annotations


class AdapterkitError(Exception):
    """Base class of adapterkit's errors; the message names the problem and the fix."""
