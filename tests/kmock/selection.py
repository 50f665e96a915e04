"""Label and field selectors, parsed once per request and matched per object.

Label selectors take the whole grammar clients send: `a=b`, `a==b`, `a!=b`,
`a`, `!a`, `a in (x,y)`, `a notin (x,y)`, `a>1`, `a<1`, comma-joined (all
must hold). Field selectors take `path=value`, `path==value` and
`path!=value` on any dotted path of the object (a real API server allows
only a few paths per kind; `metadata.name` and `metadata.namespace` are the
ones clients use).
"""

import re
from collections.abc import Callable, Mapping
from typing import Any

Matcher = Callable[[Mapping[str, Any]], bool]

_KEY = r'[A-Za-z0-9][A-Za-z0-9._/-]*'
_VALUE = r'[A-Za-z0-9._-]*'
_EXISTS = re.compile(rf'({_KEY})')
_ABSENT = re.compile(rf'!\s*({_KEY})')
_SET = re.compile(rf'({_KEY})\s+(in|notin)\s*\(([^)]*)\)')
_COMPARE = re.compile(rf'({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})')
_FIELD = re.compile(rf'([A-Za-z0-9._-]+)\s*(==|=|!=)\s*(.*)')


class SelectorError(ValueError):
    pass


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b` is two terms)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        elif ch == ',' and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _label_term(term: str) -> Callable[[Mapping[str, str]], bool]:
    if m := _ABSENT.fullmatch(term):
        key = m[1]
        return lambda labels: key not in labels
    if m := _SET.fullmatch(term):
        key, op = m[1], m[2]
        values = {v.strip() for v in m[3].split(',') if v.strip()}
        if op == 'in':
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values  # absent keys match, as upstream
    if m := _COMPARE.fullmatch(term):
        key, op, value = m[1], m[2], m[3]
        if op in ('=', '=='):
            return lambda labels: labels.get(key) == value
        if op == '!=':
            return lambda labels: labels.get(key) != value
        try:
            bound = int(value)
        except ValueError:
            raise SelectorError(f'{term!r}: {op} needs an integer') from None

        def compare(labels: Mapping[str, str]) -> bool:
            number = _int_or_none(labels.get(key))
            return number is not None and (number > bound if op == '>' else number < bound)
        return compare
    if m := _EXISTS.fullmatch(term):
        key = m[1]
        return lambda labels: key in labels
    raise SelectorError(f'unable to parse requirement: {term!r}')


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def label_matcher(selector: str | None) -> Matcher:
    terms = [_label_term(t) for t in _split_top_level(selector or '')]

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get('metadata') or {}).get('labels') or {}
        return all(term(labels) for term in terms)
    return matches


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split('.'):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ''
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def field_matcher(selector: str | None) -> Matcher:
    terms: list[tuple[str, bool, str]] = []
    for term in _split_top_level(selector or ''):
        m = _FIELD.fullmatch(term)
        if not m:
            raise SelectorError(f'invalid field selector: {term!r}')
        terms.append((m[1], m[2] != '!=', m[3].strip()))

    def matches(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) == equal for path, equal, value in terms)
    return matches
