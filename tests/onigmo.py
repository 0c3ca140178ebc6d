"""Fluent Bit's regex parser, run for real: Oniguruma (the library Onigmo forked, same Ruby syntax and
named groups) called through ctypes with the encoding and syntax Fluent Bit's ``flb_regex`` uses
(UTF-8, ``ONIG_SYNTAX_RUBY``). A pattern Python accepts but Fluent Bit would not compile, or would
match differently, fails here rather than on the nodes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

ONIG_MISMATCH = -1
ONIG_OPTION_NONE = 0


class _Region(ctypes.Structure):
    _fields_ = [
        ("allocated", ctypes.c_int),
        ("num_regs", ctypes.c_int),
        ("beg", ctypes.POINTER(ctypes.c_int)),
        ("end", ctypes.POINTER(ctypes.c_int)),
    ]


class _ErrorInfo(ctypes.Structure):
    _fields_ = [("enc", ctypes.c_void_p), ("par", ctypes.c_char_p), ("par_end", ctypes.c_char_p)]


@cache
def library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("onig")
    if name is None:
        return None
    onig = ctypes.CDLL(name)
    onig.onig_new.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(_ErrorInfo),
    ]
    onig.onig_region_new.restype = ctypes.POINTER(_Region)
    onig.onig_search.argtypes = [
        ctypes.c_void_p,
        *[ctypes.c_char_p] * 4,
        ctypes.POINTER(_Region),
        ctypes.c_uint,
    ]
    onig.onig_name_to_backref_number.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.POINTER(_Region),
    ]
    onig.onig_error_code_to_str.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_ErrorInfo)]
    onig.onig_free.argtypes = [ctypes.c_void_p]
    onig.onig_region_free.argtypes = [ctypes.POINTER(_Region), ctypes.c_int]
    utf8 = ctypes.c_void_p.in_dll(onig, "OnigEncodingUTF8")
    encodings = (ctypes.c_void_p * 1)(ctypes.addressof(utf8))
    onig.onig_initialize(encodings, 1)
    return onig


class Regex:
    """One compiled pattern: ``match(text)`` gives the named groups that took part, as Fluent Bit keeps them."""

    def __init__(self, pattern: str, names: list[str]) -> None:
        onig = library()
        assert onig is not None, "libonig not found"
        self._onig, self._names = onig, names
        self._handle = ctypes.c_void_p()
        raw = pattern.encode()
        error = _ErrorInfo()
        utf8 = ctypes.addressof(ctypes.c_void_p.in_dll(onig, "OnigEncodingUTF8"))
        ruby = ctypes.addressof(ctypes.c_void_p.in_dll(onig, "OnigSyntaxRuby"))
        text = ctypes.create_string_buffer(raw, len(raw))
        start, end = (
            ctypes.c_char_p(ctypes.addressof(text)),
            ctypes.c_char_p(ctypes.addressof(text) + len(raw)),
        )
        code = onig.onig_new(ctypes.byref(self._handle), start, end, ONIG_OPTION_NONE, utf8, ruby, error)
        if code != 0:
            message = ctypes.create_string_buffer(256)
            onig.onig_error_code_to_str(message, code, ctypes.byref(error))
            raise ValueError(f"Oniguruma refuses {pattern!r}: {message.value.decode()}")

    def match(self, text: str) -> dict[str, str] | None:
        raw = text.encode()
        region = self._onig.onig_region_new()
        try:
            start = ctypes.create_string_buffer(raw, len(raw))
            base = ctypes.addressof(start)
            at = lambda offset: ctypes.c_char_p(base + offset)  # noqa: E731
            found = self._onig.onig_search(self._handle, at(0), at(len(raw)), at(0), at(len(raw)), region, 0)
            if found == ONIG_MISMATCH:
                return None
            groups: dict[str, str] = {}
            for name in self._names:
                encoded = name.encode()
                buffer = ctypes.create_string_buffer(encoded, len(encoded))
                number = self._onig.onig_name_to_backref_number(
                    self._handle,
                    ctypes.c_char_p(ctypes.addressof(buffer)),
                    ctypes.c_char_p(ctypes.addressof(buffer) + len(encoded)),
                    region,
                )
                begin, end = region.contents.beg[number], region.contents.end[number]
                if begin >= 0:
                    groups[name] = raw[begin:end].decode()
            return groups
        finally:
            self._onig.onig_region_free(region, 1)
