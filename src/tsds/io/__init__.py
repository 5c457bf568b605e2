"""Adapters for files: embedding matrices, text readers, atomic output."""
