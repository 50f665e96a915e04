"""PATCH bodies applied to a stored object: JSON merge patch (RFC 7386),
strategic merge patch, JSON patch (RFC 6902) and server-side apply.

Strategic merge is what kubectl sends by default (`kubectl patch`, `kubectl
apply` on an existing object). Treating it as a plain merge patch would lose
list entries: `kubectl apply` sends only the changed entries of a list such as
a Service's ports, keyed by a merge key. So lists the stand-in's kinds merge
by key are listed here; every other list is replaced, which is what the API
does for lists without a merge key.

Every function returns a new object and leaves its inputs alone: stored
versions are shared with the event log and must never change.
"""

import copy
from typing import Any

import jsonpatch  # a dependency of kmock

# (parent field, list field) -> merge key, for the lists of our kinds that
# merge by key under a strategic merge patch.
MERGE_KEYS: dict[tuple[str, str], str] = {
    ('spec', 'ports'): 'port',  # Service
    ('spec', 'taints'): 'key',  # Node
    ('status', 'conditions'): 'type',  # Node, Service
    ('status', 'addresses'): 'type',  # Node
    ('metadata', 'ownerReferences'): 'uid',
}
# Lists of scalars that a strategic merge patch unions rather than replaces.
MERGED_SCALAR_LISTS: set[tuple[str, str]] = {
    ('metadata', 'finalizers'),
    ('spec', 'podCIDRs'),
}


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge, `null` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get('$patch')
    if directive == 'replace':
        return _without_directives(patch)
    if directive == 'delete':
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith('$'):
            continue
        here = path + (key,)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _patch_list(result.get(key), value, here, patch)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value, here)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    for key, removed in patch.items():
        if key.startswith('$deleteFromPrimitiveList/'):
            field = key.split('/', 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in removed]
    if isinstance(patch.get('$retainKeys'), list):
        keep = set(patch['$retainKeys'])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _patch_list(old: Any, new: list[Any], path: tuple[str, ...], parent_patch: dict[str, Any]) -> list[Any]:
    field = path[-1]
    order = parent_patch.get(f'$setElementOrder/{field}')
    old_list = copy.deepcopy(old) if isinstance(old, list) else []
    where = path[-2:]
    if where in MERGED_SCALAR_LISTS:
        merged = old_list + [v for v in new if v not in old_list]
        return _reorder(merged, order, key=None)
    merge_key = MERGE_KEYS.get(where)  # type: ignore[arg-type]
    if merge_key is None or not all(isinstance(v, dict) for v in new):
        return [_without_directives(v) if isinstance(v, dict) else v for v in new]
    merged = [v for v in old_list if isinstance(v, dict)]
    for item in new:
        index = next((i for i, v in enumerate(merged) if v.get(merge_key) == item.get(merge_key)), None)
        if item.get('$patch') == 'delete':
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(_without_directives(item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item, path)
    return _reorder(merged, order, key=merge_key)


def _reorder(items: list[Any], order: Any, key: str | None) -> list[Any]:
    """Honour `$setElementOrder/<field>`: listed entries first, in its order."""
    if not isinstance(order, list):
        return items
    wanted = [o.get(key) if key and isinstance(o, dict) else o for o in order]

    def rank(item: Any) -> int:
        ident = item.get(key) if key and isinstance(item, dict) else item
        return wanted.index(ident) if ident in wanted else len(wanted)
    return sorted(items, key=rank)  # stable: unlisted entries keep their order at the end


def _without_directives(value: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in value.items() if not k.startswith('$')}


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise PatchError('a JSON patch is a list of operations')
    try:
        return jsonpatch.apply_patch(copy.deepcopy(target), operations, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise PatchError(str(e)) from e


# Content types of PATCH bodies, by what they mean here.
MERGE = 'application/merge-patch+json'
STRATEGIC = 'application/strategic-merge-patch+json'
JSON_PATCH = 'application/json-patch+json'
APPLY = 'application/apply-patch+yaml'


def apply(content_type: str, target: dict[str, Any], body: Any) -> dict[str, Any]:
    """Apply a PATCH body of the given content type to `target`.

    Server-side apply is approximated by a merge patch of the applied object:
    there is no field ownership, so fields a manager stops applying stay.
    """
    if content_type == JSON_PATCH:
        result = json_patch(target, body)
    elif not isinstance(body, dict):
        raise PatchError('a merge patch is a JSON object')
    elif content_type == STRATEGIC:
        result = strategic_merge_patch(target, body)
    else:  # MERGE, APPLY
        result = merge_patch(target, body)
    if not isinstance(result, dict):
        raise PatchError('the patch did not leave an object')
    return result
