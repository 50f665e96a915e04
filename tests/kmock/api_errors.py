"""The failures the stand-in answers with, as KMock errors (rendered as a
`Status` object) carrying the reasons and messages a real API server uses,
since clients branch on `reason` and `code` (kube-rs on 410 Expired, kubectl
on NotFound and AlreadyExists).
"""

from typing import Any

import kmock

from kinds import Kind


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `Status` object, as sent in error bodies and in watch ERROR events."""
    body: dict[str, Any] = {
        'kind': 'Status',
        'apiVersion': 'v1',
        'metadata': {},
        'status': 'Failure',
        'message': message,
        'reason': reason,
        'code': code,
    }
    if details:
        body['details'] = details
    return body


def _error(code: int, reason: str, message: str, kind: Kind | None = None, name: str | None = None) -> kmock.KubernetesError:
    details: dict[str, Any] = {}
    if name:
        details['name'] = name
    if kind is not None:
        details['kind'] = kind.plural
        if kind.group:
            details['group'] = kind.group
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details or None)


def not_found(kind: Kind, name: str) -> kmock.KubernetesError:
    return _error(404, 'NotFound', f'{kind.name} "{name}" not found', kind, name)


def no_such_path(path: str) -> kmock.KubernetesError:
    return _error(404, 'NotFound', f'the server could not find the requested resource ({path})')


def already_exists(kind: Kind, name: str) -> kmock.KubernetesError:
    return _error(409, 'AlreadyExists', f'{kind.name} "{name}" already exists', kind, name)


def conflict(kind: Kind, name: str, why: str) -> kmock.KubernetesError:
    return _error(409, 'Conflict', f'Operation cannot be fulfilled on {kind.name} "{name}": {why}', kind, name)


def invalid(kind: Kind, name: str, why: str) -> kmock.KubernetesError:
    return _error(422, 'Invalid', f'{kind.kind} "{name}" is invalid: {why}', kind, name)


def bad_request(message: str) -> kmock.KubernetesError:
    return _error(400, 'BadRequest', message)


def expired(message: str) -> kmock.KubernetesError:
    return _error(410, 'Expired', message)


def method_not_allowed(method: str, path: str) -> kmock.KubernetesError:
    return _error(405, 'MethodNotAllowed', f'{method} is not supported on {path}')


def unsupported_media_type(content_type: str) -> kmock.KubernetesError:
    return _error(415, 'UnsupportedMediaType', f'the body of the request was in an unknown format: {content_type}')


def unavailable() -> kmock.KubernetesError:
    return _error(503, 'ServiceUnavailable', 'the stand-in API server is in a simulated outage')


def as_status(error: kmock.KubernetesError) -> dict[str, Any]:
    return status(error.status, error.reason or 'Unknown', error.message or '', error.details)
