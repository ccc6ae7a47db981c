"""Load benchmarks: mpp-proxy side by side with peer proxies against one nginx upstream."""
