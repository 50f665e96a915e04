#!/usr/bin/env python3
"""Self-check of the stand-in API server, run by hand (CI does not run it).

    python3 tests/kmock/check.py [--kubectl /usr/bin/kubectl] [--keep]

Starts serve.py on a free port, drives it with kubectl and with plain HTTP,
prints PASS or FAIL for each step, stops the server by its pid and exits
non-zero if any step failed. Its files (server log, kubeconfig, kubectl
cache) go to a temporary directory, removed at the end unless --keep.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from kubeconfig import kubeconfig  # noqa: E402

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  type: ClusterIP
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
"""
SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: https, port: 8443, protocol: TCP}
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: true}
"""
NODE = """\
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {kubernetes.io/hostname: node-a}
spec:
  podCIDRs: [10.244.1.0/24]
"""


class Failed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


class Checker:
    def __init__(self) -> None:
        self.failures = 0

    def step(self, name: str, fn: Callable[[], str | None]) -> None:
        try:
            detail = fn()
        except Failed as e:
            self.failures += 1
            print(f'FAIL {name}: {e}', flush=True)
        except Exception:
            self.failures += 1
            print(f'FAIL {name}: {traceback.format_exc().strip()}', flush=True)
        else:
            print(f'PASS {name}' + (f': {detail}' if detail else ''), flush=True)


class Api:
    """Plain HTTP to the stand-in (urllib, as a test without a client library would)."""

    def __init__(self, port: int) -> None:
        self.base = f'http://127.0.0.1:{port}'

    def call(self, method: str, path: str, body: Any = None, content_type: str = 'application/json') -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header('Content-Type', content_type)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b'null')
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b'null')

    def ok(self, method: str, path: str, body: Any = None, content_type: str = 'application/json') -> Any:
        code, answer = self.call(method, path, body, content_type)
        expect(200 <= code < 300, f'{method} {path}: HTTP {code}: {answer}')
        return answer

    def watch(self, path: str, until: Callable[[list[dict[str, Any]]], bool] | None = None,
              seconds: float = 10.0) -> tuple[list[dict[str, Any]], bool, str]:
        """Read watch events until `until(events)` holds, the server ends the
        stream, or `seconds` pass. Returns (events, ended by the server,
        content type)."""
        deadline = time.monotonic() + seconds
        events: list[dict[str, Any]] = []
        with urllib.request.urlopen(self.base + path, timeout=seconds) as resp:
            content_type = resp.headers.get('Content-Type', '')
            while time.monotonic() < deadline:
                try:
                    line = resp.readline()
                except TimeoutError:
                    return events, False, content_type
                if not line:
                    return events, True, content_type
                events.append(json.loads(line))
                if until is not None and until(events):
                    return events, False, content_type
        return events, False, content_type


class BackgroundWatch:
    """A watch read on a thread, to see the server end it."""

    def __init__(self, api: Api, path: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(api, path), daemon=True)
        self._thread.start()

    def _run(self, api: Api, path: str) -> None:
        try:
            events, ended, _ = api.watch(path, seconds=30)
            self.events = events
            if ended:
                self.ended.set()
        except BaseException as e:  # a dropped connection also ends it
            self.error = e
            self.ended.set()


def kinds_of(events: list[dict[str, Any]]) -> list[str]:
    return [e['type'] for e in events]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--kubectl', default='/usr/bin/kubectl')
    parser.add_argument('--keep', action='store_true', help='keep the temporary directory')
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix='lash-kmock-check.')
    ready = os.path.join(tmp, 'ready')
    log = open(os.path.join(tmp, 'serve.log'), 'w')
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, 'serve.py'), '--port', '0', '--ready-file', ready,
         '--bookmark-interval', '0.5'],
        stdout=log, stderr=subprocess.STDOUT)
    check = Checker()
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(ready) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not os.path.exists(ready):
            print(f'FAIL server start: no ready file (log: {log.name})')
            return 1
        port = int(open(ready).read())
        print(f'PASS server start: serve.py pid {server.pid} on 127.0.0.1:{port}', flush=True)
        kubeconfig_path = os.path.join(tmp, 'kubeconfig')
        with open(kubeconfig_path, 'w') as f:
            f.write(kubeconfig(port))
        run_steps(check, Api(port), args.kubectl, kubeconfig_path, tmp)
    finally:
        stop_server(check, server)
        log.close()
        if check.failures or args.keep:
            print(f'files kept in {tmp}')
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f'{"FAIL" if check.failures else "PASS"}: {check.failures} step(s) failed')
    return 1 if check.failures else 0


def stop_server(check: Checker, server: subprocess.Popen[bytes]) -> None:
    def stop() -> str:
        os.kill(server.pid, signal.SIGTERM)
        started = time.monotonic()
        try:
            code = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
            raise Failed('still running 10 s after SIGTERM (killed)')
        expect(code == 0, f'exit code {code}')
        return f'exit 0 in {time.monotonic() - started:.2f} s'
    def still_running() -> str:
        expect(server.poll() is None, f'exited early with status {server.returncode}')
        return ''
    check.step('server still running at the end', still_running)
    if server.poll() is None:
        check.step('server exits cleanly on SIGTERM', stop)


def run_steps(check: Checker, api: Api, kubectl_bin: str, kubeconfig_path: str, tmp: str) -> None:
    def kubectl(*argv: str, stdin: str | None = None) -> str:
        cmd = [kubectl_bin, '--kubeconfig', kubeconfig_path, '--cache-dir', os.path.join(tmp, 'kcache'), *argv]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
        expect(done.returncode == 0, f'{" ".join(argv)}: exit {done.returncode}: {done.stderr.strip()}')
        return done.stdout

    def kubectl_json(*argv: str) -> dict[str, Any]:
        return json.loads(kubectl(*argv, '-o', 'json'))

    versions: dict[str, int] = {}

    # ---- kubectl ----
    check.step('kubectl create Service (ClusterIP, two ports)',
               lambda: kubectl('create', '--validate=false', '-f', '-', stdin=SERVICE).strip())
    check.step('kubectl create EndpointSlice for it',
               lambda: kubectl('create', '--validate=false', '-f', '-', stdin=SLICE).strip())
    check.step('kubectl create Node', lambda: kubectl('create', '--validate=false', '-f', '-', stdin=NODE).strip())

    def get_as_json() -> str:
        for name, argv in (('service', ('get', 'service', 'web')),
                           ('endpointslice', ('get', 'endpointslices.discovery.k8s.io', 'web-x1')),
                           ('node', ('get', 'node', 'node-a'))):
            obj = kubectl_json(*argv)
            meta = obj['metadata']
            expect(meta.get('resourceVersion', '').isdigit(), f'{name}: resourceVersion {meta.get("resourceVersion")!r}')
            expect(bool(meta.get('uid')) and bool(meta.get('creationTimestamp')), f'{name}: no uid or creationTimestamp')
            versions[name] = int(meta['resourceVersion'])
        order = [versions['service'], versions['endpointslice'], versions['node']]
        expect(order == sorted(order) and len(set(order)) == 3, f'resourceVersions not increasing: {order}')
        svc = kubectl_json('get', 'service', 'web')
        expect(svc['spec'].get('clusterIP', '').startswith('10.96.'), f'no ClusterIP allocated: {svc["spec"]}')
        return f'resourceVersions {order}, clusterIP {svc["spec"]["clusterIP"]}'
    check.step('kubectl get -o json: resourceVersion present and increasing', get_as_json)

    def kubectl_watch_sees_modify() -> str:
        cmd = [kubectl_bin, '--kubeconfig', kubeconfig_path, '--cache-dir', os.path.join(tmp, 'kcache'),
               'get', 'svc', '--watch', '-o', 'json', '--output-watch-events']
        watcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen: list[dict[str, Any]] = []
        try:
            reader = threading.Thread(target=_read_json_stream, args=(watcher.stdout, seen), daemon=True)
            reader.start()
            _wait_until(lambda: any(e.get('type') == 'ADDED' for e in seen), 10, 'no ADDED from kubectl --watch')
            kubectl('label', 'service', 'web', 'stage=watched')
            _wait_until(lambda: any(e.get('type') == 'MODIFIED'
                                    and e['object']['metadata'].get('labels', {}).get('stage') == 'watched'
                                    for e in seen), 10, f'no MODIFIED with the new label; saw {[e.get("type") for e in seen]}')
        finally:
            os.kill(watcher.pid, signal.SIGTERM)
            watcher.wait(timeout=10)
        return f'events {[e["type"] for e in seen]}'
    check.step('kubectl get svc --watch -o json sees a modify', kubectl_watch_sees_modify)

    def merge_patch() -> str:
        kubectl('patch', 'service', 'web', '--type', 'merge', '-p', '{"spec":{"sessionAffinity":"ClientIP"}}')
        svc = kubectl_json('get', 'service', 'web')
        expect(svc['spec']['sessionAffinity'] == 'ClientIP', f'sessionAffinity {svc["spec"]["sessionAffinity"]}')
        return f'resourceVersion now {svc["metadata"]["resourceVersion"]}'
    check.step('kubectl patch --type merge', merge_patch)

    def strategic_patch() -> str:
        kubectl('patch', 'service', 'web', '-p', '{"spec":{"ports":[{"port":443,"targetPort":9443}]}}')
        ports = kubectl_json('get', 'service', 'web')['spec']['ports']
        expect([(p['port'], p['targetPort']) for p in ports] == [(80, 8080), (443, 9443)], f'ports {ports}')
        return 'one port changed, the other kept'
    check.step('kubectl patch (strategic) merges ports by key', strategic_patch)

    def delete() -> str:
        kubectl('create', '--validate=false', '-f', '-', stdin=SERVICE.replace('name: web', 'name: gone'))
        kubectl('delete', 'service', 'gone')
        code, answer = api.call('GET', '/api/v1/namespaces/default/services/gone')
        expect(code == 404 and answer.get('reason') == 'NotFound', f'after delete: HTTP {code} {answer}')
        return 'then GET answers 404 NotFound'
    check.step('kubectl delete', delete)

    # ---- plain HTTP ----
    def list_shape() -> str:
        answer = api.ok('GET', '/api/v1/services?labelSelector=!service.kubernetes.io/headless')
        expect(answer.get('kind') == 'ServiceList' and answer.get('apiVersion') == 'v1', f'kind/apiVersion {answer.get("kind")} {answer.get("apiVersion")}')
        expect(answer['metadata']['resourceVersion'].isdigit(), f'list resourceVersion {answer["metadata"]}')
        expect([i['metadata']['name'] for i in answer['items']] == ['web'], f'items {answer["items"]}')
        slices = api.ok('GET', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io/service-name%3Dweb')
        expect(slices['kind'] == 'EndpointSliceList' and len(slices['items']) == 1, f'slices {slices}')
        return f'ServiceList at resourceVersion {answer["metadata"]["resourceVersion"]}'
    check.step('list: kind, apiVersion, numeric resourceVersion, label selectors', list_shape)

    def replay() -> str:
        svc_path = '/api/v1/namespaces/default/services/web'
        before = api.ok('GET', '/api/v1/services')['metadata']['resourceVersion']
        api.ok('POST', '/api/v1/namespaces/default/services', {'metadata': {'name': 'other'}, 'spec': {'ports': [{'port': 82}]}})
        api.ok('PATCH', svc_path, {'metadata': {'labels': {'step': 'one'}}}, 'application/merge-patch+json')
        api.ok('PATCH', svc_path, {'metadata': {'labels': {'step': 'two'}}}, 'application/merge-patch+json')
        events, ended, content_type = api.watch(
            f'/api/v1/services?watch=1&resourceVersion={before}&timeoutSeconds=2&fieldSelector=metadata.name%3Dweb', seconds=6)
        expect(content_type.startswith('application/json'), f'watch Content-Type {content_type!r}')
        steps = [e['object']['metadata']['labels'].get('step') for e in events]
        expect(kinds_of(events) == ['MODIFIED', 'MODIFIED'] and steps == ['one', 'two'], f'events {kinds_of(events)} steps {steps}')
        versions_seen = [int(e['object']['metadata']['resourceVersion']) for e in events]
        expect(min(versions_seen) > int(before) and versions_seen == sorted(versions_seen), f'versions {versions_seen}')
        expect(ended, 'the watch did not end after timeoutSeconds=2')
        return f'from {before}: {versions_seen} (another Service left out by fieldSelector), closed at timeoutSeconds'
    check.step('watch from an old resourceVersion replays later events', replay)

    def bookmarks() -> str:
        events, _, _ = api.watch('/api/v1/services?watch=true&allowWatchBookmarks=true&resourceVersion=1',
                                 until=lambda ev: kinds_of(ev).count('BOOKMARK') >= 2, seconds=5)
        marks = [e for e in events if e['type'] == 'BOOKMARK']
        expect(len(marks) >= 2, f'bookmarks {len(marks)} in {kinds_of(events)}')
        expect(all(m['object']['metadata']['resourceVersion'].isdigit() and m['object']['kind'] == 'Service' for m in marks), f'{marks}')
        return f'{len(marks)} bookmarks at resourceVersion {marks[-1]["object"]["metadata"]["resourceVersion"]}'
    check.step('bookmarks arrive', bookmarks)

    def selector_transitions() -> str:
        svc_path = '/api/v1/namespaces/default/services/web'
        start = api.ok('GET', svc_path)['metadata']['resourceVersion']
        api.ok('PATCH', svc_path, {'metadata': {'labels': {'service.kubernetes.io/headless': ''}}}, 'application/merge-patch+json')
        api.ok('PATCH', svc_path, {'metadata': {'labels': {'service.kubernetes.io/headless': None}}}, 'application/merge-patch+json')
        events, _, _ = api.watch(f'/api/v1/services?watch=true&labelSelector=!service.kubernetes.io/headless&resourceVersion={start}',
                                 until=lambda ev: len(ev) >= 2, seconds=5)
        expect(kinds_of(events) == ['DELETED', 'ADDED'], f'events {kinds_of(events)}')
        return 'labelled out: DELETED, labelled back: ADDED'
    check.step('watch with a label selector sees objects leave and join it', selector_transitions)

    def streaming_list() -> str:
        events, _, _ = api.watch('/api/v1/services?watch=true&sendInitialEvents=true&allowWatchBookmarks=true'
                                 '&resourceVersionMatch=NotOlderThan&resourceVersion=',
                                 until=lambda ev: ev[-1]['type'] == 'BOOKMARK', seconds=5)
        expect(events and events[-1]['type'] == 'BOOKMARK'
               and events[-1]['object']['metadata'].get('annotations', {}).get('k8s.io/initial-events-end') == 'true',
               f'events {kinds_of(events)}')
        expect(set(kinds_of(events[:-1])) == {'ADDED'}, f'events {kinds_of(events)}')
        return f'{len(events) - 1} ADDED, then the initial-events-end bookmark'
    check.step('streaming list (sendInitialEvents) ends its initial events with a bookmark', streaming_list)

    def compaction() -> str:
        current = api.ok('GET', '/api/v1/services')['metadata']['resourceVersion']
        open_watch = BackgroundWatch(api, f'/api/v1/services?watch=true&resourceVersion={current}')
        _wait_until(lambda: api.ok('GET', '/lash-test/state')['openWatches'].get('services', 0) >= 1, 5, 'the watch never opened')
        answer = api.ok('POST', '/lash-test/compact')
        expect(open_watch.ended.wait(5), 'the open watch was not closed by the compaction')
        # Even the newest version from before the compaction is now too old.
        events, ended, _ = api.watch(f'/api/v1/services?watch=true&resourceVersion={current}', seconds=5)
        expect(ended and len(events) == 1 and events[0]['type'] == 'ERROR', f'events {events}')
        status = events[0]['object']
        expect(status.get('kind') == 'Status' and status.get('code') == 410 and status.get('reason') == 'Expired', f'{status}')
        relist = api.ok('GET', '/api/v1/services')['metadata']['resourceVersion']
        fresh, _, _ = api.watch(f'/api/v1/services?watch=true&resourceVersion={relist}&timeoutSeconds=1', seconds=5)
        expect(all(e['type'] != 'ERROR' for e in fresh), f'a watch from the relist failed: {fresh}')
        return f'compacted at {answer["compactedResourceVersion"]}; from {current}: 410 "{status["message"]}"; from a relist: fine'
    check.step('after /lash-test/compact: watches closed, old resourceVersion gets 410 Expired', compaction)

    def paging() -> str:
        for name in ('page-a', 'page-b'):
            api.ok('POST', '/api/v1/namespaces/default/services', {'metadata': {'name': name}, 'spec': {'ports': [{'port': 80}]}})
        first = api.ok('GET', '/api/v1/namespaces/default/services?limit=2')
        token = first['metadata'].get('continue')
        expect(len(first['items']) == 2 and token and first['metadata'].get('remainingItemCount') == 2, f'first page {first["metadata"]}')
        rest = api.ok('GET', f'/api/v1/namespaces/default/services?limit=2&continue={token}')
        names = [i['metadata']['name'] for i in first['items'] + rest['items']]
        expect(names == ['other', 'page-a', 'page-b', 'web'] and 'continue' not in rest['metadata'], f'names {names}')
        api.ok('POST', '/lash-test/compact')
        code, answer = api.call('GET', f'/api/v1/namespaces/default/services?limit=2&continue={token}')
        expect(code == 410 and answer.get('reason') == 'Expired', f'stale continue: HTTP {code} {answer}')
        return 'two pages of two; a continue token from before a compaction gets HTTP 410'
    check.step('list paging (limit/continue) and 410 for a stale continue', paging)

    def bulk_load() -> str:
        before = api.ok('GET', '/api/v1/services')['metadata']['resourceVersion']
        # More than aiohttp's 1 MiB body limit, all or none, each object stamped.
        slices = [{'apiVersion': 'discovery.k8s.io/v1', 'kind': 'EndpointSlice',
                   'metadata': {'name': f'bulk-{i}-x', 'namespace': 'bulk', 'labels': {'kubernetes.io/service-name': f'bulk-{i}'}},
                   'addressType': 'IPv4', 'ports': [{'name': 'http', 'port': 8080, 'protocol': 'TCP'}],
                   'endpoints': [{'addresses': [f'10.128.{i // 250}.{i % 250 + k}'], 'conditions': {'ready': True}} for k in range(3)]}
                  for i in range(3000)]
        services = [{'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': 'bulk-a', 'namespace': 'bulk'},
                     'spec': {'clusterIP': '10.96.0.77', 'ports': [{'port': 80}]}},
                    {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': 'bulk-b', 'namespace': 'bulk'},
                     'spec': {'ports': [{'port': 80}]}}]
        body = services + slices
        size = len(json.dumps(body))
        expect(size > 1024 * 1024, f'the body is only {size} bytes')
        clash = {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': 'bulk-c', 'namespace': 'bulk'},
                 'spec': {'clusterIP': '10.96.0.77', 'ports': [{'port': 80}]}}
        code, answer = api.call('POST', '/lash-test/load', body + [clash])
        expect(code == 422 and answer.get('reason') == 'Invalid', f'a ClusterIP taken twice: HTTP {code} {answer}')
        expect(api.ok('GET', '/api/v1/namespaces/bulk/services')['items'] == [], 'a refused load stored something')
        answer = api.ok('POST', '/lash-test/load', {'apiVersion': 'v1', 'kind': 'List', 'items': body})
        expect(answer['loaded'] == len(body), f'{answer}')
        got = api.ok('GET', '/api/v1/namespaces/bulk/services')['items']
        expect([s['metadata']['name'] for s in got] == ['bulk-a', 'bulk-b'], f'services {got}')
        expect(got[0]['spec']['clusterIP'] == '10.96.0.77' and got[1]['spec']['clusterIP'].startswith('10.96.'), f'{[s["spec"] for s in got]}')
        expect(all(s['metadata'].get('uid') and s['metadata'].get('creationTimestamp') for s in got), f'{got}')
        listed, token = [], ''
        while True:
            page = api.ok('GET', f'/apis/discovery.k8s.io/v1/namespaces/bulk/endpointslices?labelSelector=!service.kubernetes.io/headless&limit=500{token}')
            listed += page['items']
            if not page['metadata'].get('continue'):
                break
            token = f'&continue={page["metadata"]["continue"]}'
        versions = [int(o['metadata']['resourceVersion']) for o in listed]
        expect(len(listed) == len(slices) and len(set(versions)) == len(versions) and min(versions) > int(before), f'{len(listed)} slices, versions {min(versions)}..{max(versions)}')
        events, _, _ = api.watch(f'/api/v1/services?watch=1&resourceVersion={before}&fieldSelector=metadata.namespace%3Dbulk',
                                 until=lambda ev: len(ev) >= 2, seconds=5)
        expect(kinds_of(events) == ['ADDED', 'ADDED'], f'events {kinds_of(events)}')
        code, answer = api.call('POST', '/lash-test/load', services[:1])
        expect(code == 409 and answer.get('reason') == 'AlreadyExists', f'loading an existing name: HTTP {code} {answer}')
        return f'{answer["details"]["name"]} again: 409; {len(body)} objects ({size} bytes) loaded, each with its own resourceVersion; a watch replays them as ADDED'
    check.step('/lash-test/load: bulk create, all or none, stamped like creates', bulk_load)

    def outage() -> str:
        current = api.ok('GET', '/api/v1/services')['metadata']['resourceVersion']
        open_watch = BackgroundWatch(api, f'/api/v1/services?watch=true&resourceVersion={current}')
        _wait_until(lambda: api.ok('GET', '/lash-test/state')['openWatches'].get('services', 0) >= 1, 5, 'the watch never opened')
        answer = api.ok('POST', '/lash-test/outage?seconds=2')
        expect(open_watch.ended.wait(5), 'the open watch survived the outage')
        code, status = api.call('GET', '/api/v1/services')
        expect(code == 503 and status.get('reason') == 'ServiceUnavailable', f'during the outage: HTTP {code} {status}')
        started = time.monotonic()
        _wait_until(lambda: api.call('GET', '/api/v1/services')[0] == 200, 6, 'never recovered')
        return f'{answer["closedWatches"]} watch(es) closed, {answer["droppedConnections"]} connection(s) dropped, 503, back after {time.monotonic() - started:.1f} s'
    check.step('outage: watches closed, 503, then recovery', outage)

    def request_counts() -> str:
        counts = api.ok('GET', '/lash-test/requests')['resources']
        services = counts.get('services', {})
        expect(services.get('list', 0) >= 5 and services.get('watch', 0) >= 5, f'counts {counts}')
        return f'services: {services.get("list")} lists, {services.get("watch")} watches'
    check.step('/lash-test/requests counts lists and watches', request_counts)


def _read_json_stream(stream: Any, into: list[dict[str, Any]]) -> None:
    """kubectl -o json prints indented objects one after another."""
    decoder = json.JSONDecoder()
    buffer = ''
    for line in stream:
        buffer += line
        while True:
            text = buffer.lstrip()
            if not text:
                break
            try:
                obj, end = decoder.raw_decode(text)
            except ValueError:
                break
            into.append(obj)
            buffer = text[end:]


def _wait_until(condition: Callable[[], bool], seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, Failed):
            pass
        time.sleep(0.1)
    raise Failed(message)


if __name__ == '__main__':
    sys.exit(main())
