"""`lienthong health`: ask the running node's gRPC health service over mTLS,
with the node's own certificate (the container's HEALTHCHECK uses it)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lienthong.sync.errors import LienthongError
from lienthong.sync.transport import TlsFiles


def check(address: str, tls: TlsFiles, server_name: str, timeout: float) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert)
    options = [("grpc.ssl_target_name_override", server_name)]
    with grpc.secure_channel(address, credentials, options=options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            raise LienthongError(
                f"the node at {address} did not answer its health check: {exc.details()}",
                "look at the node's log",
            ) from None
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise LienthongError(f"the node at {address} is not serving", "it may be starting or stopping; look at its log")
