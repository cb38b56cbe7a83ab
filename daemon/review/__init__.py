"""The review pages: every faceset, every decision and the pool as pictures, and undo with one click.

- pages.py: what each page shows, read from the state through a read-only connection (state/readonly.py);
- thumbs.py: thumbnails made once per sha256, cached under the state folder;
- actions.py: what a click does (restore, ...), the same Pipeline call as the CLI verb, run by a Runner;
- web.py: the Starlette app (routes, token and cross-site guard, server-sent events);
- server.py: uvicorn in a thread (the daemon) or in the foreground (`facesetd review`);
- report.py: `facesetd report --out DIR`, the same pages as static files.
"""
