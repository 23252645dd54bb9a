"""Talking to Graph: the transport, the per-device operations, and how an answer is classified."""
