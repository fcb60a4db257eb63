"""Peer-side scripts of bench/fer2013_peers.py: each runs in its peer's own venv (see peer_io.py)."""
