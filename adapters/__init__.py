"""Ingestion adapters: turn agency files into records and hand them to a sink.

Adapters never touch SQLite; they yield `lienthong.sync.records.Keyed` records.
"""
