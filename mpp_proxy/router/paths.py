"""Path safety: which raw request paths the router refuses, and percent-decoding of segments."""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_to_bytes

_HEX = "0123456789abcdefABCDEF"
_ESCAPES = frozenset(a + b for a in _HEX for b in _HEX)


def _forbidden_escapes() -> dict[str, str]:
    # Escapes whose decoded byte would change how an upstream splits or reads the path:
    # "%2F" makes a new segment, "%2E" builds a dot segment, "%5C" is a slash on some servers,
    # and encoded control bytes (NUL, CR, LF, ...) have no business in a path.
    named = {0x2F: "percent-encoded slash", 0x2E: "percent-encoded dot"}
    named[0x5C] = "percent-encoded backslash"
    named[0x00] = "percent-encoded NUL"
    for byte in [*range(0x01, 0x20), 0x7F]:
        named[byte] = "percent-encoded control character"
    # 0xC0 and 0xC1 only start overlong UTF-8 forms ("%C0%AE" is "." to a lax decoder).
    named[0xC0] = named[0xC1] = "percent-encoded overlong UTF-8"
    out: dict[str, str] = {}
    for byte, reason in named.items():
        pair = f"{byte:02x}"
        hi, lo = pair[0], pair[1]
        for h in {hi, hi.upper()}:
            for low in {lo, lo.upper()}:
                out[h + low] = reason
    return out


_FORBIDDEN_ESCAPES = _forbidden_escapes()
_CONTROL = re.compile("[\x00-\x1f\x7f\xc0\xc1]")
_DOT_PARAMS = re.compile(r"/\.\.?(?:;|%3[bB])")


def unsafe_reason(path: str) -> str | None:
    """Why a raw path (latin-1 str of the request target, no query) is refused, or None when safe.

    Every check is a scan in C over the whole string; the common clean path pays a handful of them.
    """
    if path[:1] != "/":
        return "the path must start with '/' (origin-form)"
    if "\\" in path:
        return "backslash in path"
    if "//" in path:
        return "empty path segment"
    if not (path.isascii() and path.isprintable()):
        found = _CONTROL.search(path)
        if found is not None:
            char = found.group()
            if char in "\xc0\xc1":
                return "overlong UTF-8 byte in path"
            return "NUL byte in path" if char == "\x00" else "control character in path"
    if "#" in path or "?" in path:
        return "raw '#' or '?' in path"
    if "/./" in path or "/../" in path or path.endswith(("/.", "/..")):
        return "dot segment in path"
    if "/." in path and _DOT_PARAMS.search(path):
        # Tomcat, Jetty and Spring drop ";params" from a segment before resolving dots.
        return "dot segment with parameters in path"
    if "%" in path:
        return _bad_escape(path)
    return None


def _bad_escape(path: str) -> str | None:
    pieces = path.split("%")
    percent = False
    for i in range(1, len(pieces)):
        pair = pieces[i][:2]
        if pair not in _ESCAPES:
            return "invalid percent escape"
        reason = _FORBIDDEN_ESCAPES.get(pair)
        if reason is not None:
            return reason
        percent = percent or pair == "25"
    return _double_encoded(path) if percent else None


def _double_encoded(path: str) -> str | None:
    """A forbidden escape hidden under "%25": "%252e" is "." to an upstream that decodes twice."""
    while True:
        decoded = unquote(path, "latin-1")
        if decoded == path:
            return None
        for piece in decoded.split("%")[1:]:
            reason = _FORBIDDEN_ESCAPES.get(piece[:2])
            if reason is not None:
                return f"double-encoded {reason}"
        path = decoded


def decode_segment(segment: str) -> str:
    """A raw segment (latin-1 str) percent-decoded and read as UTF-8 (invalid bytes replaced)."""
    if "%" not in segment and segment.isascii():
        return segment
    return unquote_to_bytes(segment.encode("latin-1")).decode("utf-8", "replace")
