"""The one JSON parser for text that ctrtrace did not write: recordings, a
rootless user's container storage, the engine's answers, cached builds.

loads() is orjson's (a dependency: much faster than the json module's, and
it refuses nesting deeper than 1,024 with a ValueError).  NOT_JSON is what
it raises on text that is not JSON, RecursionError included: the json
module, where orjson is absent, raises that for nesting deeper than the
interpreter's limit, and it is not a ValueError.  Whoever parses hostile
text catches NOT_JSON, never less.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import orjson as _orjson

    loads: Callable[[bytes | str], Any] = _orjson.loads
except ImportError:  # pragma: no cover - exercised where orjson is absent
    import json as _json

    loads = _json.loads

NOT_JSON = (ValueError, RecursionError)
