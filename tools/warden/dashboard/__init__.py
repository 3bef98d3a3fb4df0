"""`warden dashboard`: a local web page of the fleet, its devices' vitals and alerts, and the rollouts.

data.py assembles what the page shows from the registry, the monitor's store and the rollout
store (reads only); server.py serves it (aiohttp) with the page's own static files, and decides
who may look (loopback, or mutual TLS with an operator's certificate). docs/dashboard.md.
"""
