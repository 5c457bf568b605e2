"""The selection pipeline: stages shared by every execution engine."""
