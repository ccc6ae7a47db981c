"""Peer proxies and the SSE upstream, each a small script written the way its docs show."""
