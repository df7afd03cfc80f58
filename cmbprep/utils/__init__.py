"""Helpers that are neither algorithms nor Nipype interfaces: BIDS queries, derivatives."""
