"""Shared by ``pytest tests`` and ``pytest --nbval notebooks``: an isolated environment, and nbval
comparing numbers the way float results allow.

Isolation: no API keys or endpoints reach the tests or the notebook kernels (a key would turn the
published ada-002 row into paid calls and change the compared table), and embeddings go to the
project's own cache (``.cache/test-embeddings``, or ``$ADAPTERKIT_TEST_CACHE_DIR``), never the user's.

Numbers: two CPUs round float32 sums differently (about 1e-7), which can move a metric by a query
or two. nbval compares outputs as text; here a number with a decimal point may differ from the stored
one by ``--nbval-float-tolerance`` (default 0.002: a change of 0.003 in a metric still fails).
Integers must match exactly, except in cells tagged ``nbval-tolerant-counts`` (counts of queries
whose rank moved, which float rounding deep in a ranking can shift), where they may differ by 1%
(at least 1). Everything else in an output must match as before.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Callable, List, Optional

ROOT = Path(__file__).resolve().parent
_SECRETS = re.compile(r"(_API_KEY|_API_BASE|_BASE_URL|_TOKEN)$|^(OPENAI|AZURE_OPENAI|ANTHROPIC|COHERE|HF)_")

for _name in [n for n in os.environ if _SECRETS.search(n)]:
    del os.environ[_name]
os.environ["ADAPTERKIT_CACHE_DIR"] = os.environ.get("ADAPTERKIT_TEST_CACHE_DIR") or str(ROOT / ".cache" / "test-embeddings")
# Offline, always: data comes from the mirror folder, models from installed packages. The same variables
# reach every subprocess and notebook kernel a test starts.
os.environ.update(ADAPTERKIT_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")


class NetworkAccessError(OSError):
    """A test tried to reach a host other than this machine."""


def _is_local(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths (PostgreSQL's socket, kernels)
        return True
    host = str(address[0])
    return host in ("localhost", "::1", "0.0.0.0", "") or host.startswith("127.") or host.startswith("::ffff:127.")


def _guard(connect: Callable) -> Callable:
    def guarded(self: socket.socket, address: Any, *args: Any) -> Any:
        if not _is_local(address):
            raise NetworkAccessError(f"Tests never touch the network, but something connected to {address!r}.")
        return connect(self, address, *args)

    return guarded


# In this process (pytest itself), a connection to any other host fails loudly instead of leaking out.
socket.socket.connect = _guard(socket.socket.connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guard(socket.socket.connect_ex)  # type: ignore[method-assign]

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
COUNTS_TAG = "nbval-tolerant-counts"


def numbers_match(reference: str, test: str, tolerance: float, count_share: Optional[float] = None) -> bool:
    """Whether ``test`` equals ``reference`` once numbers are compared with tolerance.

    Args:
        reference, test: output texts.
        tolerance: largest absolute difference for numbers with a decimal point.
        count_share: None: integers must be equal; else they may differ by this share (at least 1).
    """
    if NUMBER.sub("#", reference) != NUMBER.sub("#", test):
        return False
    for ref, got in zip(NUMBER.findall(reference), NUMBER.findall(test)):
        if ref == got:
            continue
        decimal = any(c in ref + got for c in ".eE")
        if decimal and abs(float(ref) - float(got)) <= tolerance + 1e-12:
            continue
        if not decimal and count_share is not None and abs(int(ref) - int(got)) <= max(1, count_share * abs(int(ref))):
            continue
        return False
    return True


def _align(reference: Any, test: Any, clean: Callable[[str], str], tolerance: float, count_share: Optional[float]) -> Any:
    """``test`` with every text that matches its reference (once both are sanitized, numbers within
    tolerance) replaced by the reference; nbval then compares as usual."""
    if isinstance(reference, list) and all(isinstance(x, str) for x in reference):  # text stored as lines
        reference = "".join(reference)
    if isinstance(test, list) and all(isinstance(x, str) for x in test):
        test = "".join(test)
    if isinstance(reference, str) and isinstance(test, str):
        return reference if numbers_match(clean(reference), clean(test), tolerance, count_share) else test
    if isinstance(reference, list) and isinstance(test, list) and len(reference) == len(test):
        return [_align(r, t, clean, tolerance, count_share) for r, t in zip(reference, test)]
    if isinstance(reference, dict) and isinstance(test, dict):
        return type(test)({k: _align(reference[k], v, clean, tolerance, count_share) if k in reference else v for k, v in test.items()})
    return test


def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        "--nbval-float-tolerance",
        type=float,
        default=0.002,
        help="nbval: largest difference allowed between stored and new decimal numbers",
    )


def pytest_configure(config: Any) -> None:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:
        return
    if getattr(IPyNbCell.compare_outputs, "_tolerant", False):
        return
    original = IPyNbCell.compare_outputs

    def compare_outputs(self: Any, test: List[Any], ref: List[Any], skip_compare: Any = None) -> bool:
        tolerance = self.config.getoption("nbval_float_tolerance")
        share = 0.01 if COUNTS_TAG in self.cell.get("metadata", {}).get("tags", []) else None
        if len(test) == len(ref):
            test = [_align(r, t, self.sanitize, tolerance, share) for r, t in zip(ref, test)]
        return original(self, test, ref, skip_compare)

    compare_outputs._tolerant = True  # type: ignore[attr-defined]
    IPyNbCell.compare_outputs = compare_outputs
