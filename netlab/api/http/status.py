"""Errors as kube-apiserver gives them: `Status` objects with reason, code and details.

`ApiError` carries one; the handlers raise it and the middleware turns it into the
response body. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from netlab.errors import one_line

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
           413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
           500: "InternalError", 501: "NotImplemented", 503: "ServiceUnavailable"}


def status(code: int, message: str, reason: str | None = None, *, name: str | None = None,
           kind: str | None = None, group: str | None = None,
           causes: list[dict] | None = None) -> dict:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message,
                           "reason": reason or REASONS.get(code, "Unknown"), "code": code}
    details: dict[str, Any] = {}
    if name is not None:
        details["name"] = name
    if group:
        details["group"] = group
    if kind is not None:
        details["kind"] = kind
    if causes:
        details["causes"] = causes
    if details:
        out["details"] = details
    return out


def success(name: str, kind: str, group: str = "", uid: str | None = None) -> dict:
    d: dict[str, Any] = {"name": name, "kind": kind}
    if group:
        d["group"] = group
    if uid:
        d["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d}


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, **details):
        super().__init__(message)
        self.code = code
        self.body = status(code, message, reason, **details)


def qualified(resource: str, group: str) -> str:
    """`pods`, `deployments.apps`: how kube-apiserver names a resource in messages."""
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(404, f'{qualified(resource, group)} "{name}" not found', name=name,
                    kind=resource, group=group)


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(409, f'{qualified(resource, group)} "{name}" already exists', "AlreadyExists",
                    name=name, kind=resource, group=group)


def conflict(resource: str, name: str, group: str = "", why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
                    "Conflict", name=name, kind=resource, group=group)


def invalid(kind: str, name: str, message: str, group: str = "") -> ApiError:
    """422 from one of netlab's field errors (`spec.ports[0].port: 0 is not a port ...`).

    The field is what precedes the first ': ' when it looks like a field path."""
    field, sep, rest = message.partition(": ")
    if not sep or " " in field:
        field, rest = "", message
    cause = {"reason": "FieldValueInvalid", "message": rest or message}
    if field:
        cause["field"] = field
    text = f"{field}: Invalid value: {rest}" if field else message
    return ApiError(422, one_line(f'{kind} "{name}" is invalid: {text}'), "Invalid", name=name, kind=kind,
                    group=group, causes=[cause])
