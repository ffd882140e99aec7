"""Sentence embeddings for the rewards, cached in the store."""
