"""Domain errors. Domain code raises these; the server interceptor maps them to gRPC status codes."""

from __future__ import annotations

import grpc


class TutorforgeError(Exception):
    """Base class: the message must say what to fix."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(TutorforgeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(TutorforgeError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TutorforgeError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(TutorforgeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(TutorforgeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(TutorforgeError):
    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(TutorforgeError):
    code = grpc.StatusCode.CANCELLED


class Unauthenticated(TutorforgeError):
    code = grpc.StatusCode.UNAUTHENTICATED


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for any exception raised by a handler."""
    if isinstance(error, TutorforgeError):
        return error.code, error.message
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        # A downstream service's status passes through unchanged.
        return error.code(), error.details() or "downstream call failed"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}): {error}"
