"""Input files to rows: streaming readers for CSV, JSON and JSON Lines."""
