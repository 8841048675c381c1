"""End-to-end benchmark of the service against an in-process baseline and `transformers serve`.

Run with ``python -m bench``; see bench/README.md.
"""
