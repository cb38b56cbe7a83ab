"""The incremental checks: plain functions `(ctx, events) -> new events`, one module each.

Which check consumes which event kind, and in what order, is declared once in handlers/flow.py (FLOW); the
dispatcher (handlers/dispatch.py) runs that map over the log. Importing this package imports no check: the
flow map does, when the dispatcher (or `python -m handlers.flow`) needs it.
"""
