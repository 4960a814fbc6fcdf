"""Retrieval service: ingest teaching material (text, Markdown, HTML, PDF) into Qdrant and search it
by dense, sparse (BM25-style) or hybrid queries with metadata filters and citable hits."""
