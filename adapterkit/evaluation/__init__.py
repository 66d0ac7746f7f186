"""``evaluate`` and ``display_results``, recipes side by side with bootstrap intervals, the NUDGE-N baseline."""
