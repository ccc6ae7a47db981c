"""`python -m mpp_proxy`: the same command line as `mpp-proxy`."""

from mpp_proxy.cli import main

raise SystemExit(main())
