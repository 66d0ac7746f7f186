"""From your documents (a folder or a vector store) to a fitted, evaluated model folder: what ``adapterkit`` commands run."""
