"""Curation: dedup, decontaminate, verify, R1 filters, selection, data cards (`distill curate`)."""
