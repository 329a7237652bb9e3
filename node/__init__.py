"""The process shell of lienthong: CLI, lifecycle, TLS and identity, status, logs."""

import os

# gRPC's C core prints its own unstructured lines to stderr (one per failed TLS
# handshake); the node logs every such failure itself, structured, with a hint.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
