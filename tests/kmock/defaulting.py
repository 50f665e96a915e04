"""What a real API server fills in or refuses on a write, for the fields lash
reads: a Service gets a ClusterIP (and node ports) allocated, port protocols
and target ports defaulted, and the ip-family fields set; a Namespace gets its
name label and phase; an EndpointSlice must say its addressType.

Without the ClusterIP a Service made by `kubectl create service` or a test
that leaves it out would have no frontend for the agent to serve.
"""

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import api_errors
from kinds import Kind

SERVICE_CIDR = ipaddress.ip_network('10.96.0.0/12')
# Like a real allocator, hand out addresses above a low block kept for
# addresses chosen by hand (tests use 10.96.0.x), in order here so that runs
# are repeatable.
DYNAMIC_OFFSET = 257
NODE_PORTS = range(30000, 32768)


@dataclass
class Taken:
    """The ClusterIPs and node ports that other Services hold."""
    cluster_ips: set[str] = field(default_factory=set)
    node_ports: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, services: Iterable[dict[str, Any]]) -> 'Taken':
        taken = cls()
        for service in services:
            taken.add(service)
        return taken

    def add(self, service: dict[str, Any]) -> None:
        spec = service.get('spec') or {}
        self.cluster_ips.update(spec.get('clusterIPs') or [])
        self.node_ports.update(p['nodePort'] for p in spec.get('ports') or [] if p.get('nodePort'))


def prepare(kind: Kind, obj: dict[str, Any], old: dict[str, Any] | None, taken: Callable[[], Taken]) -> None:
    """Default and check `obj` (a fresh copy, changed in place) before it is
    stored. `old` is the stored version on an update; `taken` gives what the
    other Services hold. It is called only for a Service: collecting it means
    a walk over the whole store, which a write of any other kind (an
    EndpointSlice edit, the bulk of what the benchmark times) must not pay."""
    name = obj['metadata']['name']
    if kind.kind == 'Service':
        _service(kind, name, obj, old, taken())
    elif kind.kind == 'Namespace':
        obj['metadata'].setdefault('labels', {})['kubernetes.io/metadata.name'] = name
        obj.setdefault('spec', {}).setdefault('finalizers', ['kubernetes'])
        obj.setdefault('status', {}).setdefault('phase', 'Active')
    elif kind.kind == 'EndpointSlice':
        if not obj.get('addressType'):
            raise api_errors.invalid(kind, name, 'addressType: Required value')
        if obj.get('endpoints') is None:
            obj['endpoints'] = []


def _service(kind: Kind, name: str, obj: dict[str, Any], old: dict[str, Any] | None, taken: Taken) -> None:
    spec = obj.setdefault('spec', {})
    old_spec = (old or {}).get('spec') or {}
    svc_type = spec.setdefault('type', 'ClusterIP')
    spec.setdefault('sessionAffinity', 'None')
    for port in spec.get('ports') or []:
        port.setdefault('protocol', 'TCP')
        if svc_type != 'ExternalName':
            port.setdefault('targetPort', port.get('port'))
    obj.setdefault('status', {'loadBalancer': {}})
    if svc_type == 'ExternalName':
        return

    asked = spec.get('clusterIP') or (spec.get('clusterIPs') or [None])[0]
    kept = old_spec.get('clusterIP') if old_spec.get('type') != 'ExternalName' else None
    if asked and kept and asked != kept:
        raise api_errors.invalid(kind, name, 'spec.clusterIPs[0]: Invalid value: field is immutable')
    cluster_ip = asked or kept
    used = taken.cluster_ips
    if not cluster_ip:
        cluster_ip = _free_ip(used)
        if cluster_ip is None:
            raise api_errors.invalid(kind, name, 'spec.clusterIPs: Internal error: no free ClusterIP')
    elif cluster_ip != 'None':
        try:
            ipaddress.ip_address(cluster_ip)
        except ValueError:
            raise api_errors.invalid(kind, name, f'spec.clusterIPs[0]: Invalid value: "{cluster_ip}": must be a valid IP address') from None
        if cluster_ip in used:
            raise api_errors.invalid(kind, name, f'spec.clusterIPs: Invalid value: ["{cluster_ip}"]: failed to allocate IP {cluster_ip}: provided IP is already allocated')
    spec['clusterIP'] = cluster_ip
    if not spec.get('clusterIPs') or spec['clusterIPs'][0] != cluster_ip:
        spec['clusterIPs'] = [cluster_ip] + [ip for ip in (old_spec.get('clusterIPs') or [])[1:]]
    families = [_family(ip) for ip in spec['clusterIPs'] if ip != 'None'] or ['IPv4']
    spec.setdefault('ipFamilies', families)
    spec.setdefault('ipFamilyPolicy', 'SingleStack' if len(spec['ipFamilies']) == 1 else 'RequireDualStack')
    spec.setdefault('internalTrafficPolicy', 'Cluster')

    if svc_type in ('NodePort', 'LoadBalancer'):
        spec.setdefault('externalTrafficPolicy', 'Cluster')
        if svc_type == 'LoadBalancer':
            spec.setdefault('allocateLoadBalancerNodePorts', True)
        _node_ports(kind, name, spec, old_spec, taken)


def _free_ip(used: set[str]) -> str | None:
    for offset in range(DYNAMIC_OFFSET, SERVICE_CIDR.num_addresses - 1):
        ip = str(SERVICE_CIDR.network_address + offset)
        if ip not in used:
            return ip
    return None


def _family(ip: str) -> str:
    try:
        return 'IPv6' if ipaddress.ip_address(ip).version == 6 else 'IPv4'
    except ValueError:
        return 'IPv4'


def _node_ports(kind: Kind, name: str, spec: dict[str, Any], old_spec: dict[str, Any], taken: Taken) -> None:
    used = set(taken.node_ports)  # a copy: this Service's own ports join it below
    # An update that leaves a node port out keeps the one it had.
    kept = {(p.get('port'), p.get('protocol', 'TCP')): p.get('nodePort') for p in old_spec.get('ports') or []}
    for port in spec.get('ports') or []:
        wanted = port.get('nodePort') or kept.get((port.get('port'), port.get('protocol')))
        if wanted:
            if wanted in used:
                raise api_errors.invalid(kind, name, f'spec.ports[].nodePort: Invalid value: {wanted}: provided port is already allocated')
        else:
            wanted = next((p for p in NODE_PORTS if p not in used), None)
            if wanted is None:
                raise api_errors.invalid(kind, name, 'spec.ports[].nodePort: Internal error: no free node port')
        port['nodePort'] = wanted
        used.add(wanted)
