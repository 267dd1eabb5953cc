"""The one exception a handler raises to refuse a request: a micro error code and a sentence."""

from __future__ import annotations


class CtlError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bad(message: str) -> CtlError:
    return CtlError(400, message)


def not_found(message: str) -> CtlError:
    return CtlError(404, message)


def conflict(message: str) -> CtlError:
    return CtlError(409, message)


def forbidden(message: str) -> CtlError:
    return CtlError(403, message)
