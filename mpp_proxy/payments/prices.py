"""Prices computed from the request, sans-I/O: a route's price rule and the request in, the
price (one of the rule's price points) or a 400 problem naming the field out."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from mpp_proxy.config.model import PriceRule
from mpp_proxy.problems import Problem, problem


def price_for(rule: PriceRule, *, body: bytes, query: str, size: int) -> Decimal | Problem:
    """The price this request pays under `rule`; a 400 problem when its input cannot be read.

    `body` is the whole body (read only for `json:` rules), `size` its length in bytes.
    """
    source = rule.source
    if source == "size":
        return _priced(rule, size, "the body size", size)
    field = rule.body_field
    if field is not None:
        found = _json_field(body, field)
        if isinstance(found, Problem):
            return found
        return _priced(rule, found, f"field {field!r}", found, json_field=field)
    name = source[6:]
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == name]
    if len(values) > 1:
        # Upstreams differ on which one they read: the price must not depend on that.
        return bad_input(source, f"query parameter {name!r} is given more than once")
    value = values[0] if values else None
    return _priced(rule, value, f"query parameter {name!r}", value)


_MISSING = object()


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers differ on which of two equal keys wins: a priced body may not have any.
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


def _json_field(body: bytes, field: str) -> Any:
    """The value at the dotted path `field` of a JSON body; _MISSING when absent."""
    try:
        value: Any = json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey:
        return bad_input(field, "the JSON body names a key twice; its price would be ambiguous")
    except (ValueError, RecursionError):
        return bad_input(
            field,
            f"this route's price is read from the JSON body's field {field!r}; "
            "the body is not JSON",
        )
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _priced(
    rule: PriceRule, value: Any, what: str, shown: Any, *, json_field: str | None = None
) -> Decimal | Problem:
    field = json_field or rule.source
    if value is None or value is _MISSING:
        if rule.default is not None:
            return rule.default
        return bad_input(field, f"this route's price is read from {what}, which is missing")
    if rule.table:
        return _from_table(rule, value, what, field)
    number = _number(value)
    if number is None:
        return bad_input(field, f"{what} must be a number to price this request, not {shown!r}")
    for tier in rule.tiers:
        if number <= tier.upto:
            return tier.amount
    if rule.default is not None:
        return rule.default
    top = rule.tiers[-1].upto
    return bad_input(field, f"{what} is {shown}; this route prices values up to {top}")


def _from_table(rule: PriceRule, value: Any, what: str, field: str) -> Decimal | Problem:
    if isinstance(value, str):
        for name, amount in rule.table:
            if name == value:
                return amount
        if rule.default is not None:
            return rule.default
        known = ", ".join(repr(name) for name, _ in rule.table)
        return bad_input(field, f"{what} is {value!r}; this route is priced for {known}")
    return bad_input(field, f"{what} must be a string to price this request")


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def bad_input(field: str, detail: str) -> Problem:
    """400 naming the request field a price could not be read from."""
    return problem(400, "bad-price-input", "Bad request", detail, field=field)
