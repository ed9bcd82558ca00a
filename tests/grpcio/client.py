"""An outside check: the stock Python grpcio client (from PyPI) talks to the
agent over its unix socket: health, both server-reflection versions, and
ListExperiments with message classes built from reflection alone.

Usage: client.py SOCKET [--default-authority]
Prints one line per check ("ok <what>") and exits non-zero on the first failure.
"""

import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    socket = sys.argv[1]
    options = []
    if "--default-authority" in sys.argv[2:]:
        options.append(("grpc.default_authority", "localhost"))
    channel = grpc.insecure_channel(f"unix://{socket}", options=options)
    grpc.channel_ready_future(channel).result(timeout=10)

    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply
    print("ok health SERVING")

    # grpc.reflection.v1alpha, through grpcio-reflection's own client.
    database = ProtoReflectionDescriptorDatabase(channel)
    services = list(database.get_services())
    assert "faultline.v1.FaultService" in services, services
    print("ok reflection v1alpha", ",".join(sorted(services)))

    # grpc.reflection.v1: ServerReflectionRequest{list_services: ""} by hand
    # (field 7, a string), the answer checked for the service name.
    v1 = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    answers = list(v1(iter([b"\x3a\x00"]), timeout=10))
    assert answers and b"faultline.v1.FaultService" in answers[0], answers
    print("ok reflection v1")

    # ListExperiments with classes made from the reflected descriptors.
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("faultline.v1.FaultService").FindMethodByName(
        "ListExperiments"
    )
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/faultline.v1.FaultService/ListExperiments",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    listed = call(request_cls(running_only=False), timeout=10)
    print(f"ok ListExperiments {len(listed.experiments)} experiments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
