"""Size limits on a request's schemas and tools, checked before anything compiles them:
the number of tools (`max_tools`), each schema's bytes (`max_schema_bytes`) and nesting
depth (`max_schema_depth`). Each refusal is a 400 naming the limit and the request field.

Reads the `OutputSpec` alone (schemas as canonical JSON text); compiling is the engine's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promptcache.api.errors import invalid
from promptcache.config import ServerConfig
from promptcache.engine.grammar.spec import OutputKind, OutputSpec

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")
_DEFAULTS = ServerConfig()


def json_depth(text: str) -> int:
    """The deepest nesting of objects and arrays in a JSON text (0 for a scalar)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


@dataclass(frozen=True, slots=True)
class SchemaLimits:
    max_schema_bytes: int = _DEFAULTS.max_schema_bytes
    max_schema_depth: int = _DEFAULTS.max_schema_depth
    max_tools: int = _DEFAULTS.max_tools

    def check(self, spec: OutputSpec, format_param: str) -> None:
        """Raise a 400 for too many tools or a schema too large or too deep."""
        if len(spec.tools) > self.max_tools:
            raise invalid(
                f"tools: {len(spec.tools)} tools, more than this server's limit of "
                f"{self.max_tools} (max_tools)",
                "tools",
                "too_many_tools",
            )
        if spec.kind is OutputKind.JSON_SCHEMA:
            self._check_schema(spec.schema, f"the schema in {format_param}", format_param)
        for tool in spec.tools:
            self._check_schema(tool.parameters, f"the parameters of tool {tool.name!r}", "tools")

    def _check_schema(self, schema: str, what: str, param: str) -> None:
        size = len(schema.encode())
        if size > self.max_schema_bytes:
            raise invalid(
                f"{what} is {size} bytes of JSON, more than this server's limit of "
                f"{self.max_schema_bytes} (max_schema_bytes)",
                param,
                "schema_too_large",
            )
        depth = json_depth(schema)
        if depth > self.max_schema_depth:
            raise invalid(
                f"{what} nests {depth} levels deep, more than this server's limit of "
                f"{self.max_schema_depth} (max_schema_depth)",
                param,
                "schema_too_deep",
            )
