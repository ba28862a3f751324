"""Across the collection: questions over many videos with checked citations, one table from many videos, search."""
