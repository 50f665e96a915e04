"""The resources the stand-in serves, and what discovery says about them.

One row per resource. Everything kind-specific the server does (discovery,
list kinds, which writes leave `status` alone, default objects) starts here.
"""

from dataclasses import dataclass

ALL_VERBS = ('create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch')


@dataclass(frozen=True)
class Kind:
    group: str  # '' for the core group
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # With a status subresource, writes to the object keep the old status and
    # writes to /status change nothing else, as on a real API server.
    has_status: bool = False

    @property
    def api_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def name(self) -> str:
        """The name kubectl would use: `services`, `endpointslices.discovery.k8s.io`."""
        return f'{self.plural}.{self.group}' if self.group else self.plural


KINDS: tuple[Kind, ...] = (
    Kind('', 'v1', 'services', 'Service', 'service', True, ('svc',), ('all',), has_status=True),
    Kind('', 'v1', 'nodes', 'Node', 'node', False, ('no',), has_status=True),
    Kind('', 'v1', 'namespaces', 'Namespace', 'namespace', False, ('ns',), has_status=True),
    Kind('discovery.k8s.io', 'v1', 'endpointslices', 'EndpointSlice', 'endpointslice', True),
)


def find(group: str, version: str, plural: str) -> Kind | None:
    for kind in KINDS:
        if (kind.group, kind.version, kind.plural) == (group, version, plural):
            return kind
    return None


def of_object(api_version: str | None, kind_name: str | None) -> Kind | None:
    """The served resource of an object by its apiVersion and kind."""
    for kind in KINDS:
        if (kind.api_version, kind.kind) == (api_version, kind_name):
            return kind
    return None
