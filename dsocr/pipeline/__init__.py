"""The document pipeline: PDFs and images in, Markdown/JSON/HTML/searchable PDF out (docs/pipeline.md)."""
