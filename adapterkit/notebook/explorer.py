"""Base and adapter retrievers side by side: a table for one query, and an ipywidgets explorer.

Example::

    explorer({"base": base_index, "adapter": adapter_index}, top_k=5, query="What are Uber's main risks?")
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import pandas as pd
from llama_index.core.schema import MetadataMode

__all__ = ["explorer", "side_by_side"]


def side_by_side(query: str, indexes: Mapping[str, Any], top_k: int = 5, relevant: Sequence[str] = (), width: int = 90) -> pd.DataFrame:
    """Top-``k`` chunks for ``query`` from each index (e.g. base vs adapter), one column per index.

    Chunks in ``relevant`` are marked with ✓.
    """
    relevant_ids = set(relevant)
    columns: Dict[str, List[str]] = {}
    for name, index in indexes.items():
        cells = []
        for hit in index.as_retriever(similarity_top_k=top_k).retrieve(query):
            text = " ".join(hit.node.get_content(metadata_mode=MetadataMode.NONE).split())
            mark = "✓ " if hit.node.node_id in relevant_ids else ""
            cells.append(f"{mark}[{hit.score:.3f}] {text[:width]}…")
        columns[name] = cells + [""] * (top_k - len(cells))
    return pd.DataFrame(columns, index=pd.RangeIndex(1, top_k + 1, name="rank"))


def explorer(indexes: Mapping[str, Any], top_k: int = 5, query: str = "", relevant_of: Optional[Mapping[str, Sequence[str]]] = None) -> Any:
    """An ipywidgets explorer: type a query (Enter or Search), see each index's top-k side by side.

    Args:
        indexes: ``{name: index}``, e.g. ``{"base": base_index, "adapter": adapter_index}``.
        top_k: results per index.
        query: the query shown first.
        relevant_of: optional ``{query text: relevant node ids}`` to mark known answers.

    Works headless too (nothing waits for input): the first query's results are rendered at once.
    """
    import ipywidgets as widgets
    from IPython.display import display

    box = widgets.Text(
        value=query, placeholder="Ask the Uber 10-K…", description="Query", continuous_update=False, layout=widgets.Layout(width="70%")
    )
    k = widgets.IntSlider(value=top_k, min=1, max=10, description="top k")
    button = widgets.Button(description="Search", button_style="primary")
    out = widgets.Output()

    def run(*_: Any) -> None:
        with out:
            out.clear_output(wait=True)
            if box.value.strip():
                rel = (relevant_of or {}).get(box.value, ())
                display(side_by_side(box.value, indexes, k.value, relevant=rel))

    box.observe(run, names="value")
    k.observe(run, names="value")
    button.on_click(run)
    run()
    return widgets.VBox([widgets.HBox([box, button]), k, out])
