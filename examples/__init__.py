"""Runnable examples (``examples.code``: code workflows; ``workers/``: workers in other languages)."""
