"""S3 key prefixes of the model store: one check for the stack's ModelSource and the model toolkit."""

from __future__ import annotations

import re

from inferstack.infra.errors import InvalidInput

_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def check_prefix(prefix: str, *, field: str = "prefix") -> str:
    if not isinstance(prefix, str) or not _PREFIX.match(prefix) or ".." in prefix:
        raise InvalidInput(
            field,
            prefix,
            "a key prefix like 'team/ranker': segments of letters, digits, . _ -; "
            "no leading or trailing '/', no '..', no wildcards",
        )
    return prefix
