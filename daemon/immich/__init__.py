"""Immich as a source: poll users' self-hosted Immich servers for new photos with faces.

client.py talks HTTP (deadline.py gives each request one deadline and cuts them all off at a stop; errors.py
holds its typed errors; shapes.py reads the server's answers into checked values), poller.py runs one pass for
one user, breaker.py pauses polling during an outage and backs off, scheduler.py runs one APScheduler job per
user, store.py is the protocol the poller writes through and the event-log store that implements it,
staging.py keeps server file names inside the staging folder.
"""
