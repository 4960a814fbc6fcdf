"""Domain errors. Domain code raises these; the server interceptor maps them to gRPC status codes."""

from __future__ import annotations

import grpc

# Status messages travel in trailing metadata (8 KiB by default): a longer one would turn the answer into
# RESOURCE_EXHAUSTED, so it is cut here whatever a handler echoed into it.
MAX_STATUS_CHARS = 2000


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
        return error.code, _bounded(error.message)
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        # A downstream service's status passes through unchanged.
        return error.code(), _bounded(error.details() or "downstream call failed")
    return grpc.StatusCode.INTERNAL, _bounded(f"internal error ({type(error).__name__}): {error}")


def _bounded(message: str) -> str:
    if len(message) <= MAX_STATUS_CHARS:
        return message
    return f"{message[:MAX_STATUS_CHARS]}… (message cut at {MAX_STATUS_CHARS} of {len(message)} characters)"


def error_for_status(code: grpc.StatusCode, message: str) -> TutorforgeError:
    """The domain error of a status a server answered (the inverse of `status_of`), for clients: a code
    without its own class gives a TutorforgeError carrying that code."""
    for kind in _ERROR_CLASSES:
        if kind.code == code:
            return kind(message)
    error = TutorforgeError(message)
    error.code = code
    return error


_ERROR_CLASSES = (
    InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, ResourceExhausted, Unavailable, Cancelled,
    Unauthenticated,
)
