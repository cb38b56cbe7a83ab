"""Immich as a source: poll users' self-hosted Immich servers for new photos with faces.

client.py talks HTTP, poller.py runs one pass for one user, breaker.py pauses polling during an
outage, scheduler.py runs one APScheduler job per user, store.py is the small protocol the poller
writes through (the event log backs it in the daemon), staging.py keeps server file names inside
the staging folder.
"""
