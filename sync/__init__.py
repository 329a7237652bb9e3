"""The domain core of lienthong: records, clock, store, change log and replication.

Nothing here imports the process shell (`lienthong.node`) or the adapters; gRPC
is reached only through `transport` and the generated `wire` package.
"""
