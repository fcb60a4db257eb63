"""Peer-side scripts, each run in its peer's own venv: *_peer.py for bench/fer2013_peers.py (see peer_io.py), pyemotion_video.py for bench/vs_fer.py."""
