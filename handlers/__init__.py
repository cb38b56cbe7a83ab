"""The incremental checks: plain functions registered by the event kind they consume."""
