"""The append-only event log, the corpus layout and the projections regenerated from the log."""

VERSION = "0.1.0"
