"""One run's stages: rows in, paced and retried sends, one record per row out (docs/architecture.md)."""
