"""A Kubernetes API server stand-in for lash's integration tests, on KMock.

KMock's `KubernetesEmulator` gives the HTTP plumbing, discovery, the object
store (`.objects`, with each object's history) and the request log. What it
lacks for kube-rs's watcher and kubectl (see README.md) is added here:

- one resourceVersion counter stamped on every write, a log of changes that
  watches resume from, and 410 Expired for what the log no longer holds;
- list kinds and versions, paging, label and field selectors;
- watches that are JSON, honour resourceVersion, timeoutSeconds and
  bookmarks, and turn a label change into ADDED or DELETED for a selector;
- PUT, the four PATCH types, finalizers, status subresources, and the
  defaulting a real server does for Services, Namespaces and EndpointSlices;
- test controls under /lash-test/: compact the log, a simulated outage,
  request counts, the server's state.

Requests for the served resources are answered here directly instead of
through KMock's reaction DSL: a KMock reaction keeps the status and headers of
the last response it rendered, so a 201 given to one create would stay on the
next list. Discovery and the test controls do go through the DSL.
"""

import asyncio
import base64
import bisect
import collections
import copy
import datetime
import itertools
import json
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock

import api_errors
import defaulting
import kinds
import patching
import selection
from changelog import Change, ChangeLog, Subscription, TooOld
from kinds import Kind

CONTROL_PREFIX = '/lash-test/'
LOAD_PATH = '/lash-test/load'
# What Go's strconv.ParseBool takes as true, which is what the API server uses.
TRUE = {'1', 't', 'T', 'true', 'TRUE', 'True'}
# A real API server ends a watch without timeoutSeconds after 30 to 60 minutes.
DEFAULT_WATCH_SECONDS = 1800.0
# Paths under /api/v1/namespaces/NAME/ that are the namespace's own subresources.
NAMESPACE_SUBRESOURCES = {'status', 'finalize'}
JSON = 'application/json'


@dataclass(frozen=True)
class ApiPath:
    """A request path split the Kubernetes way. KMock's own parser cannot
    take /api/v1/namespaces (it fails) or /api/v1/namespaces/NAME (it reads
    NAME as a namespace), which kubectl and kube-rs both use."""
    group: str
    version: str | None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    parts = [p for p in path.split('/') if p]
    if len(parts) >= 2 and parts[0] == 'api':
        group, version, rest = '', parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == 'apis':
        group, version, rest = parts[1], (parts[2] if len(parts) > 2 else None), parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == 'namespaces' and not (len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES):
        namespace, rest = rest[1], rest[2:]
    return ApiPath(
        group, version,
        plural=rest[0] if rest else None,
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource='/'.join(rest[2:]) or None,
    )


@dataclass(frozen=True)
class Route:
    """A request for one of our resources: the collection or one object."""
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _decode_body(content_type: str, body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        pass
    if 'yaml' in content_type:  # server-side apply bodies may be YAML
        try:
            import yaml
            return yaml.safe_load(body)
        except Exception:
            return None
    return None


def _sort_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj['metadata']
    return (meta.get('namespace') or '', meta['name'])


def _encode_continue(version: int, after: tuple[str, str]) -> str:
    raw = json.dumps({'v': version, 'after': list(after)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data['v']), (str(data['after'][0]), str(data['after'][1]))
    except (ValueError, KeyError, IndexError, TypeError):
        raise api_errors.bad_request('invalid continue token') from None


def _typed(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    """The object with its apiVersion and kind set, and first, as clients print them."""
    rest = {k: v for k, v in obj.items() if k not in ('apiVersion', 'kind')}
    return {'apiVersion': kind.api_version, 'kind': kind.kind, **rest}


def _without_version(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get('metadata', {}).items() if k != 'resourceVersion'}
    return dict(obj, metadata=meta)


@attrs.define(kw_only=True)
class LashApiServer(kmock.KubernetesEmulator):
    bookmark_interval: float = 1.0
    log_capacity: int = 100_000

    _log: ChangeLog = attrs.field(init=False)
    _counts: dict[str, collections.Counter[str]] = attrs.field(init=False, factory=lambda: collections.defaultdict(collections.Counter))
    _refused: int = attrs.field(init=False, default=0)
    _outage_until: float = attrs.field(init=False, default=0.0)
    _stopping: bool = attrs.field(init=False, default=False)
    # The live objects per resource (Kind.name) by (namespace, name), beside
    # KMock's store: a list walks only its own resource, without KMock's
    # per-object views and copies. With 20,000 objects, a list of 500 through
    # KMock's store took 80 ms a page.
    _index: dict[str, dict[tuple[str, str], dict[str, Any]]] = attrs.field(
        init=False, factory=lambda: collections.defaultdict(dict))
    # Their keys in list order, per resource; dropped when a key comes or goes.
    _order: dict[str, list[tuple[str, str]]] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._log = ChangeLog(self.log_capacity)
        for kind in kinds.KINDS:
            self.resources[self._ref(kind)] = kmock.ResourceInfo(
                kind=kind.kind, singular=kind.singular, namespaced=kind.namespaced,
                verbs=kinds.ALL_VERBS, shortnames=kind.short_names, categories=kind.categories,
                subresources={'status'} if kind.has_status else set(),
            )
        self['post /lash-test/compact'] << self._control_compact
        self['post /lash-test/load'] << self._control_load
        self['post /lash-test/outage'] << self._control_outage
        self['get /lash-test/requests'] << self._control_requests
        self['delete /lash-test/requests'] << self._control_reset_requests
        self['get /lash-test/state'] << self._control_state
        namespaces = kinds.find('', 'v1', 'namespaces')
        assert namespaces is not None
        self._create_object(namespaces, None, {'metadata': {'name': 'default'}}, dry_run=False)

    @staticmethod
    def _ref(kind: Kind) -> kmock.resource:
        return kmock.resource(group=kind.group, version=kind.version, plural=kind.plural)

    # ---- the HTTP entry point -------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Replaces KMock's entry point to build the request from our own path
        # parser (see ApiPath) and to render every failure as a Status.
        if raw.path == LOAD_PATH:
            # A bulk load is many megabytes; aiohttp's read() stops at 1 MiB
            # (a real API server's cap is 3 MiB), so read the stream whole.
            body = await raw.content.read()
        else:
            body = await raw.read()
        path = parse_api_path(raw.path)
        resource = None
        if path is not None:
            resource = kmock.resource(group=path.group, version=path.version, plural=path.plural)
        request = kmock.Request(
            id=len(self._requests), raw_request=raw, url=raw.url, method=raw.method,
            # Headers stay case-insensitive: hyper (kube-rs) sends them in lower case.
            params=dict(raw.query), headers=raw.headers, cookies=dict(raw.cookies),
            body=body, text=body.decode('utf-8', 'replace'), data=_decode_body(raw.content_type, body),
            action=self._action(raw.method, path, raw.query.get('watch')), resource=resource,
            namespace=path.namespace if path else None, name=path.name if path else None,
            subresource=path.subresource if path else None,
        )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as e:
            return await self._render_error(e)

    @staticmethod
    def _action(method: str, path: ApiPath | None, watch: str | None) -> kmock.action | None:
        if path is None or path.plural is None:
            return None
        if method == 'GET':
            if watch in TRUE:
                return kmock.action.WATCH
            return kmock.action.FETCH if path.name else kmock.action.LIST
        return {
            'POST': kmock.action.CREATE, 'PUT': kmock.action.UPDATE,
            'PATCH': kmock.action.UPDATE, 'DELETE': kmock.action.DELETE,
        }.get(method)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            return aiohttp.web.json_response(api_errors.as_status(exc), status=exc.status)
        traceback.print_exception(exc, file=sys.stderr)
        body = api_errors.status(500, 'InternalError', f'stand-in failure: {exc!r}')
        return aiohttp.web.json_response(body, status=500)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw_path = request.url.path
        # Skip KubernetesEmulator._handle, which writes objects before its
        # reactions run and without versions; ours write in the verbs below.
        kmock_dispatch = super(kmock.KubernetesEmulator, self)._handle
        if raw_path.startswith(CONTROL_PREFIX):
            return await kmock_dispatch(request)
        if self._stopping or self.outage_left() > 0:
            self._refused += 1
            raise api_errors.unavailable()
        if request.resource is None or request.resource.plural is None:
            return await kmock_dispatch(request)  # discovery, and KMock's 404 for other paths
        return await self._serve(self._route(request), request)

    @staticmethod
    def _route(request: kmock.Request) -> Route:
        resource = request.resource
        assert resource is not None and resource.plural is not None
        kind = kinds.find(resource.group or '', resource.version or '', resource.plural)
        if kind is None:
            raise api_errors.no_such_path(request.url.path)
        if request.namespace is not None and not kind.namespaced:
            raise api_errors.no_such_path(request.url.path)
        if request.name is not None and kind.namespaced and request.namespace is None:
            raise api_errors.no_such_path(request.url.path)  # e.g. /api/v1/services/NAME
        if request.subresource not in (None, 'status') or (request.subresource == 'status' and not kind.has_status):
            raise api_errors.no_such_path(request.url.path)
        return Route(kind, request.namespace, request.name, request.subresource)

    async def _serve(self, route: Route, request: kmock.Request) -> aiohttp.web.StreamResponse:
        method = request.method.value
        params = request.params
        if method == 'GET':
            if params.get('watch') in TRUE:
                self._count(route, 'watch')
                return await self._watch(route, request)
            if route.name:
                self._count(route, 'get')
                return self._json(self._get(route))
            self._count(route, 'list')
            return self._json(self._list(route, params))
        dry_run = 'dryRun' in params
        if method == 'POST' and route.name is None and route.subresource is None:
            self._count(route, 'create')
            if route.kind.namespaced and route.namespace is None:
                raise api_errors.no_such_path(request.url.path)
            obj = self._body_object(request)
            return self._json(self._create_object(route.kind, route.namespace, obj, dry_run), 201)
        if method == 'PUT' and route.name:
            self._count(route, 'update')
            return self._json(self._replace(route, self._body_object(request), dry_run))
        if method == 'PATCH' and route.name:
            self._count(route, 'patch')
            return self._json(self._patch(route, request, dry_run))
        if method == 'DELETE' and route.subresource is None:
            options = request.data if isinstance(request.data, dict) else {}
            if route.name:
                self._count(route, 'delete')
                return self._json(self._delete(route.kind, route.namespace, route.name, options, dry_run))
            self._count(route, 'deletecollection')
            return self._json(self._delete_collection(route, params, options, dry_run))
        raise api_errors.method_not_allowed(method, request.url.path)

    @staticmethod
    def _json(body: dict[str, Any], status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(body, status=status)

    def _count(self, route: Route, verb: str) -> None:
        self._counts[route.kind.name][verb] += 1

    @staticmethod
    def _body_object(request: kmock.Request) -> dict[str, Any]:
        content_type = request.headers.get('Content-Type', '')
        if 'protobuf' in content_type or 'cbor' in content_type:
            raise api_errors.unsupported_media_type(content_type)
        if not isinstance(request.data, dict):
            raise api_errors.bad_request('the request body is not a JSON object')
        return copy.deepcopy(request.data)  # the logged request keeps what was sent

    # ---- the store ------------------------------------------------------

    def _key(self, kind: Kind, namespace: str | None, name: str) -> tuple[kmock.resource, str | None, str]:
        return (self._ref(kind), namespace if kind.namespaced else None, name)

    def _current(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = self._key(kind, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def _live(self, kind: Kind) -> Iterator[dict[str, Any]]:
        return iter(self._index[kind.name].values())

    def _ordered_keys(self, kind: Kind) -> list[tuple[str, str]]:
        """The live objects' keys in list order (namespace, then name)."""
        keys = self._order.get(kind.name)
        if keys is None:
            keys = self._order[kind.name] = sorted(self._index[kind.name])
        return keys

    def _commit(self, kind: Kind, type_: str, obj: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
        """Every write ends here: the next version, the log, then the store."""
        self._log.commit(kind.name, type_, obj, before)
        meta = obj['metadata']
        key = self._key(kind, meta.get('namespace'), meta['name'])
        if type_ == 'DELETED':
            self.objects[key].delete()
        elif key in self.objects:
            self.objects[key].history.append(obj)
        else:
            self.objects[key] = obj
        live, at = self._index[kind.name], _sort_key(obj)
        if type_ == 'DELETED':
            live.pop(at, None)
            self._order.pop(kind.name, None)
        else:
            if at not in live:
                self._order.pop(kind.name, None)
            live[at] = obj
        return obj

    def _others(self, kind: Kind, obj: dict[str, Any]) -> list[dict[str, Any]]:
        meta = obj['metadata']
        this = (meta.get('namespace'), meta['name'])
        return [o for o in self._live(kind) if (o['metadata'].get('namespace'), o['metadata']['name']) != this]

    # ---- the verbs ------------------------------------------------------

    def _get(self, route: Route) -> dict[str, Any]:
        assert route.name is not None
        obj = self._current(route.kind, route.namespace, route.name)
        if obj is None:
            raise api_errors.not_found(route.kind, route.name)
        return obj

    def _list(self, route: Route, params: dict[str, str]) -> dict[str, Any]:
        kind = route.kind
        matches = self._matcher(route, params)
        rv = params.get('resourceVersion') or ''
        if params.get('resourceVersionMatch') == 'Exact' and rv and rv != str(self._log.version):
            # Only the present is kept, so an exact older list cannot be served.
            raise api_errors.expired(f'too old resource version: {rv} ({self._log.version})')
        live, keys = self._index[kind.name], self._ordered_keys(kind)
        version = self._log.version
        start = 0
        token = params.get('continue')
        if token:
            version, after = _decode_continue(token)
            if version < self._log.compacted:
                raise api_errors.expired(
                    'The provided continue parameter is too old to display a consistent list result. '
                    'You can start a new list without the continue parameter.')
            start = bisect.bisect_right(keys, after)
        limit = self._int_param(params, 'limit') or 0
        if rv == '0' and not token:
            limit = 0  # like the API server's watch cache, which ignores limit then
        # A page walks only as far as its last item: paging through N objects
        # costs N, not N per page.
        following = (live[key] for key in keys[start:] if matches(live[key]))
        items = list(itertools.islice(following, limit) if limit else following)
        meta: dict[str, Any] = {'resourceVersion': str(version)}
        if limit and len(items) == limit and next(following, None) is not None:
            meta['continue'] = _encode_continue(version, _sort_key(items[-1]))
            if not params.get('labelSelector') and not params.get('fieldSelector'):
                # Counted only without selectors, as a real server does:
                # counting matches would walk the rest on every page.
                meta['remainingItemCount'] = 1 + sum(1 for _ in following)
        return {'kind': f'{kind.kind}List', 'apiVersion': kind.api_version, 'metadata': meta, 'items': items}

    def _create_object(self, kind: Kind, namespace: str | None, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        obj = self._new_object(kind, namespace, obj, lambda new: self._taken(kind, new))
        if dry_run:
            return obj
        return self._commit(kind, 'ADDED', obj, None)

    def _new_object(self, kind: Kind, namespace: str | None, obj: dict[str, Any],
                    taken: Callable[[dict[str, Any]], defaulting.Taken]) -> dict[str, Any]:
        """A create up to its commit: checked, named, uid and creationTimestamp
        stamped, defaulted. Nothing is stored yet. `taken(new)` gives what
        Services other than `new` hold."""
        if obj.get('kind') not in (None, kind.kind) or obj.get('apiVersion') not in (None, kind.api_version):
            raise api_errors.bad_request(f'the body is a {obj.get("apiVersion")} {obj.get("kind")}, not a {kind.api_version} {kind.kind}')
        obj = _typed(kind, obj)
        meta = obj.setdefault('metadata', {})
        if not meta.get('name'):
            if not meta.get('generateName'):
                raise api_errors.invalid(kind, '', 'metadata.name: Required value: name or generateName is required')
            meta['name'] = meta['generateName'] + uuid.uuid4().hex[:5]
        name = meta['name']
        if kind.namespaced:
            if meta.get('namespace') not in (None, namespace):
                raise api_errors.bad_request('the namespace of the provided object does not match the namespace sent on the request')
            meta['namespace'] = namespace
        else:
            meta.pop('namespace', None)
        if self._current(kind, namespace, name) is not None:
            raise api_errors.already_exists(kind, name)
        for field in ('resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds'):
            meta.pop(field, None)
        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = _now()
        defaulting.prepare(kind, obj, None, lambda: taken(obj))
        return obj

    def _taken(self, kind: Kind, obj: dict[str, Any]) -> defaulting.Taken:
        return defaulting.Taken.of(self._others(kind, obj))

    def _replace(self, route: Route, new: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        assert route.name is not None
        old = self._get(route)
        new_meta = new.setdefault('metadata', {})
        if new_meta.get('name') not in (None, route.name):
            raise api_errors.bad_request(f'the name of the object ({new_meta.get("name")}) does not match the name on the URL ({route.name})')
        self._check_version(route, old, new_meta.get('resourceVersion'))
        return self._update(route, old, new, dry_run)

    def _patch(self, route: Route, request: kmock.Request, dry_run: bool) -> dict[str, Any]:
        assert route.name is not None
        content_type = request.headers.get('Content-Type', '').split(';')[0].strip()
        if content_type not in (patching.MERGE, patching.STRATEGIC, patching.JSON_PATCH, patching.APPLY):
            raise api_errors.unsupported_media_type(content_type)
        body = copy.deepcopy(request.data)
        old = self._current(route.kind, route.namespace, route.name)
        if old is None:
            if content_type == patching.APPLY and route.subresource is None and isinstance(body, dict):
                body.setdefault('metadata', {})['name'] = route.name
                return self._create_object(route.kind, route.namespace, body, dry_run)
            raise api_errors.not_found(route.kind, route.name)
        try:
            patched = patching.apply(content_type, old, body)
        except patching.PatchError as e:
            raise api_errors.invalid(route.kind, route.name, f'the patch could not be applied: {e}') from None
        meta = patched.setdefault('metadata', {})
        if meta.get('name') != route.name:
            raise api_errors.bad_request('a patch cannot change metadata.name')
        self._check_version(route, old, meta.get('resourceVersion'))
        return self._update(route, old, patched, dry_run)

    def _check_version(self, route: Route, old: dict[str, Any], asked: str | None) -> None:
        """Optimistic concurrency: a write that names a version must be based on the current one."""
        if asked and asked != old['metadata']['resourceVersion']:
            assert route.name is not None
            raise api_errors.conflict(route.kind, route.name,
                                      'the object has been modified; please apply your changes to the latest version and try again')

    def _update(self, route: Route, old: dict[str, Any], new: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        kind = route.kind
        if route.subresource == 'status':
            # Only the status changes through /status.
            status = new.get('status')
            new = copy.deepcopy(old)
            if status is None:
                new.pop('status', None)
            else:
                new['status'] = status
        elif kind.has_status:
            # ... and the status does not change through the object.
            if 'status' in old:
                new['status'] = copy.deepcopy(old['status'])
            else:
                new.pop('status', None)
        new = _typed(kind, new)
        meta, old_meta = new.setdefault('metadata', {}), old['metadata']
        for field in ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds'):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        defaulting.prepare(kind, new, old, lambda: self._taken(kind, new))
        if _without_version(new) == _without_version(old):
            return old  # a write that changes nothing makes no version and no event
        if dry_run:
            return new
        if meta.get('deletionTimestamp') and not meta.get('finalizers'):
            return self._commit(kind, 'DELETED', new, old)  # the last finalizer is gone
        return self._commit(kind, 'MODIFIED', new, old)

    def _delete(self, kind: Kind, namespace: str | None, name: str, options: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        old = self._current(kind, namespace, name)
        if old is None:
            raise api_errors.not_found(kind, name)
        preconditions = options.get('preconditions') or {}
        for field in ('uid', 'resourceVersion'):
            wanted = preconditions.get(field)
            if wanted and wanted != old['metadata'].get(field):
                raise api_errors.conflict(kind, name, f'Precondition failed: {field} in precondition: {wanted}, {field} in object meta: {old["metadata"].get(field)}')
        if dry_run:
            return old
        if old['metadata'].get('finalizers'):
            if old['metadata'].get('deletionTimestamp'):
                return old
            marked = copy.deepcopy(old)
            marked['metadata']['deletionTimestamp'] = _now()
            marked['metadata']['deletionGracePeriodSeconds'] = 0
            return self._commit(kind, 'MODIFIED', marked, old)
        return self._commit(kind, 'DELETED', copy.deepcopy(old), old)

    def _delete_collection(self, route: Route, params: dict[str, str], options: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        matches = self._matcher(route, params)
        victims = [o for o in self._live(route.kind) if matches(o)]
        deleted = [self._delete(route.kind, o['metadata'].get('namespace'), o['metadata']['name'], options, dry_run) for o in victims]
        kind = route.kind
        return {'kind': f'{kind.kind}List', 'apiVersion': kind.api_version,
                'metadata': {'resourceVersion': str(self._log.version)}, 'items': deleted}

    # ---- selection ------------------------------------------------------

    def _matcher(self, route: Route, params: dict[str, str]) -> selection.Matcher:
        try:
            labels = selection.label_matcher(params.get('labelSelector'))
            fields = selection.field_matcher(params.get('fieldSelector'))
        except selection.SelectorError as e:
            raise api_errors.bad_request(str(e)) from None
        namespace, name = route.namespace, route.name

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj.get('metadata') or {}
            return ((namespace is None or meta.get('namespace') == namespace)
                    and (name is None or meta.get('name') == name)
                    and labels(obj) and fields(obj))
        return matches

    @staticmethod
    def _int_param(params: dict[str, str], name: str) -> int | None:
        text = params.get(name)
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise api_errors.bad_request(f'{name}: not an integer: {text!r}') from None

    # ---- watches --------------------------------------------------------

    async def _watch(self, route: Route, request: kmock.Request) -> aiohttp.web.StreamResponse:
        params = request.params
        matches = self._matcher(route, params)
        bookmarks = params.get('allowWatchBookmarks') in TRUE
        initial_events = params.get('sendInitialEvents') in TRUE
        timeout = float(self._int_param(params, 'timeoutSeconds') or DEFAULT_WATCH_SECONDS)
        rv = params.get('resourceVersion') or ''
        since = None if rv in ('', '0') or initial_events else self._int_param(params, 'resourceVersion')

        # Subscribe and take the starting state in one step (no await between).
        first: list[tuple[str, dict[str, Any]]] = []
        gone: TooOld | None = None
        sub: Subscription | None = None
        try:
            sub, backlog = self._log.subscribe(route.kind.name, since)
        except TooOld as e:
            gone = e
        else:
            if since is None:
                live = self._index[route.kind.name]
                first = [('ADDED', live[key]) for key in self._ordered_keys(route.kind) if matches(live[key])]
            else:
                first = [view for change in backlog if (view := self._view(change, matches))]

        response = aiohttp.web.StreamResponse(headers={'Content-Type': JSON, 'Cache-Control': 'no-cache, private'})
        try:
            await response.prepare(request._raw_request)
            if sub is None:
                # The API server's answer to a watch from a forgotten version.
                await self._send(response, 'ERROR', api_errors.status(410, 'Expired', str(gone)))
            else:
                await self._stream(response, route.kind, sub, matches, first, timeout,
                                   bookmarks, initial_events and bookmarks)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            if sub is not None:
                self._log.unsubscribe(sub)
        return response

    async def _stream(self, response: aiohttp.web.StreamResponse, kind: Kind, sub: Subscription,
                      matches: selection.Matcher, first: list[tuple[str, dict[str, Any]]],
                      timeout: float, bookmarks: bool, mark_initial_end: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for type_, obj in first:
            await self._send(response, type_, obj)
        if mark_initial_end:
            await self._send(response, 'BOOKMARK', self._bookmark(kind, {'k8s.io/initial-events-end': 'true'}))
        next_bookmark = loop.time()  # the first one right away, then every interval
        while (now := loop.time()) < deadline:
            if not sub.queue.empty():
                change = sub.queue.get_nowait()
            else:
                # A bookmark's version covers every change queued before it,
                # so one goes out only when this watch has nothing left to send.
                if bookmarks and now >= next_bookmark:
                    await self._send(response, 'BOOKMARK', self._bookmark(kind))
                    next_bookmark = now + self.bookmark_interval
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, next_bookmark - now)
                try:
                    change = await asyncio.wait_for(sub.queue.get(), wait)
                except asyncio.TimeoutError:
                    continue
            if change is None:
                return  # compaction, outage or shutdown: end it like a dropped watch
            if view := self._view(change, matches):
                await self._send(response, *view)

    @staticmethod
    def _view(change: Change, matches: selection.Matcher) -> tuple[str, dict[str, Any]] | None:
        """What a watch with this selection sees of a change: an object that
        starts matching is ADDED to it, one that stops matching is DELETED."""
        now = change.type != 'DELETED' and matches(change.obj)
        was = change.before is not None and matches(change.before)
        if change.type == 'DELETED':
            return ('DELETED', change.obj) if was else None
        if now and was:
            return ('MODIFIED', change.obj)
        if now:
            return ('ADDED', change.obj)
        if was:
            return ('DELETED', change.obj)
        return None

    def _bookmark(self, kind: Kind, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {'resourceVersion': str(self._log.version)}
        if annotations:
            meta['annotations'] = annotations
        return {'kind': kind.kind, 'apiVersion': kind.api_version, 'metadata': meta}

    @staticmethod
    async def _send(response: aiohttp.web.StreamResponse, type_: str, obj: dict[str, Any]) -> None:
        await response.write(json.dumps({'type': type_, 'object': obj}).encode() + b'\n')

    # ---- discovery fixes ------------------------------------------------

    async def _serve_version(self, request: kmock.Request) -> Any:
        body = await super()._serve_version(request)
        if request.resource is not None and request.resource.group == '':
            body['groupVersion'] = request.resource.version  # KMock says "/v1"; kubectl needs "v1"
        for entry in body['resources']:
            entry['verbs'] = sorted(entry['verbs'])
            if '/' in entry['name']:
                # KMock copies the parent's short names to a subresource, and
                # kubectl then warns that `svc` might mean services/status.
                entry.update(singularName='', shortNames=[], categories=[], verbs=['get', 'patch', 'update'])
        return body

    async def _serve_server_version(self, request: kmock.Request) -> Any:
        return {
            'major': '1', 'minor': '32', 'gitVersion': 'v1.32.0-lash-kmock',
            'gitCommit': '0000000000000000000000000000000000000000', 'gitTreeState': 'clean',
            'buildDate': '2025-01-01T00:00:00Z', 'goVersion': 'go1.23', 'compiler': 'gc',
            'platform': 'linux/amd64',
        }

    # ---- test controls --------------------------------------------------

    def outage_left(self) -> float:
        return max(0.0, self._outage_until - asyncio.get_running_loop().time())

    def _control_compact(self) -> dict[str, Any]:
        closed = self._log.compact()
        return {'compactedResourceVersion': str(self._log.compacted), 'closedWatches': closed}

    def _control_load(self, request: kmock.Request) -> dict[str, Any]:
        """Creates every object of the body (a JSON array, or a List's items)
        as a create of each would: checked, uid and creationTimestamp, the
        defaulting, and a resourceVersion and a logged ADDED change of its
        own. All or none: every object is checked before the first is stored.

        One request instead of one per object: 20,000 creates through HTTP
        take minutes here, and each would walk the store for the ClusterIPs
        in use, where the load collects them once."""
        body = request.data
        items = body.get('items') if isinstance(body, dict) else body
        if not isinstance(items, list) or not all(isinstance(o, dict) for o in items):
            raise api_errors.bad_request('the body must be a JSON array of objects, or a List with items')
        services = kinds.find('', 'v1', 'services')
        assert services is not None
        taken = defaulting.Taken.of(self._live(services))
        seen: set[tuple[kmock.resource, str | None, str]] = set()
        ready: list[tuple[Kind, dict[str, Any]]] = []
        for obj in items:
            kind = kinds.of_object(obj.get('apiVersion'), obj.get('kind'))
            if kind is None:
                raise api_errors.bad_request(f'cannot load a {obj.get("apiVersion")} {obj.get("kind")}: not served here')
            namespace = ((obj.get('metadata') or {}).get('namespace') or 'default') if kind.namespaced else None
            # A copy: the logged request keeps what was sent.
            new = self._new_object(kind, namespace, copy.deepcopy(obj), lambda _new: taken)
            key = self._key(kind, namespace, new['metadata']['name'])
            if key in seen:
                raise api_errors.already_exists(kind, new['metadata']['name'])
            seen.add(key)
            if kind is services:
                taken.add(new)
            ready.append((kind, new))
        for kind, new in ready:
            self._commit(kind, 'ADDED', new, None)
        return {'loaded': len(ready), 'resourceVersion': str(self._log.version)}

    def _control_outage(self, request: kmock.Request) -> dict[str, Any]:
        try:
            seconds = float(request.params.get('seconds', '5'))
        except ValueError:
            raise api_errors.bad_request('seconds: not a number') from None
        if seconds <= 0:
            self._outage_until = 0.0
            return {'seconds': 0.0, 'closedWatches': 0, 'droppedConnections': 0}
        self._outage_until = asyncio.get_running_loop().time() + seconds
        closed_watches = self._log.close_all()
        dropped = self.drop_connections(keep=request._raw_request.protocol if request._raw_request else None)
        return {'seconds': seconds, 'closedWatches': closed_watches, 'droppedConnections': dropped}

    def _control_requests(self) -> dict[str, Any]:
        return {'resources': {name: dict(verbs) for name, verbs in sorted(self._counts.items())},
                'refused': self._refused}

    def _control_reset_requests(self) -> dict[str, Any]:
        self._counts.clear()
        self._refused = 0
        return {'reset': True}

    def _control_state(self) -> dict[str, Any]:
        return {
            'resourceVersion': str(self._log.version),
            'compactedResourceVersion': str(self._log.compacted),
            'loggedChanges': len(self._log),
            'openWatches': self._log.open_watches(),
            'outageSecondsLeft': round(self.outage_left(), 3),
        }

    # ---- lifecycle ------------------------------------------------------

    def drop_connections(self, keep: object = None) -> int:
        """Close every client connection (but `keep`), idle or mid-request,
        as an API server that goes away would."""
        dropped = 0
        for server in self.servers:
            for conn in server.server.handler.connections:
                if conn is not keep:
                    conn.force_close()
                    dropped += 1
        return dropped

    def stop(self) -> None:
        """Refuse new requests, end the watches and drop the connections, so
        that the server's own shutdown has nothing to wait for."""
        self._stopping = True
        self._log.close_all()
        self.drop_connections()
