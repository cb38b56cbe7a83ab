"""Immich as a source: poll users' self-hosted Immich servers for new photos with faces.

client.py talks HTTP, poller.py runs one pass for one user, breaker.py pauses polling during an
outage, scheduler.py runs one APScheduler job per user, store.py is the protocol the poller
writes through and the event-log store that implements it, staging.py keeps server file names inside
the staging folder.
"""
