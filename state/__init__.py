"""The append-only event log, the corpus layout and the projections regenerated from the log."""
