"""Tools and schemas the tool tests share: a weather tool, a clock tool, and a 24-tool list
long enough (over 1,024 tokens) for OpenAI's caching rules."""

from __future__ import annotations

from typing import Any

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
CLOCK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 32}},
    "required": ["timezone"],
    "additionalProperties": False,
}


def chat_tool(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    function = {"name": name, "description": description, "parameters": schema}
    return {"type": "function", "function": function}


WEATHER = chat_tool("get_weather", "Get the current weather in a city.", WEATHER_SCHEMA)
CLOCK = chat_tool("get_time", "Get the current time in a timezone.", CLOCK_SCHEMA)


def many_tools(n: int = 24) -> list[dict[str, Any]]:
    """`n` distinct tools with long descriptions (about 60 tokens each)."""
    tools = [WEATHER, CLOCK]
    for i in range(n - 2):
        schema = {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": f"What to look up in catalog {i}."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 9},
            },
            "required": ["query"],
        }
        description = (
            f"Search the product catalog number {i} of the warehouse for items that match "
            "the query, and return their names, prices and stock levels."
        )
        tools.append(chat_tool(f"search_catalog_{i}", description, schema))
    return tools
