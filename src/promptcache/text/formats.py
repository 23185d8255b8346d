"""The answer's output format as prompt text: what a `json_object` or `json_schema` request
shows the model, right after its tools and before its system prompt.

A `json_object` answer is asked for in one sentence; a `json_schema` one shows the schema's
name and description (where the API gave them) and the schema in canonical JSON (the text
`api.tools.schema_text` makes: keys sorted, a schema's `properties` kept in order) within
`<schema></schema>` tags, so the same schema sent with its keys in another order renders
the same prompt. Decoding is constrained to the format all the same (`engine.grammar`):
the text tells the model what the grammar will hold it to.
"""

from __future__ import annotations

FORMAT_HEAD = "# Response format\n\n"
ONE_OBJECT = "Respond with one JSON object only, with no text before or after it."
SCHEMA_OBJECT = (
    "Respond with one JSON object only, with no text before or after it, that conforms to "
    "the JSON schema within <schema></schema> XML tags."
)


def format_prompt(
    schema: str | None, name: str | None = None, description: str | None = None
) -> str:
    """The format part of the prompt: `schema` is a `json_schema` format's schema as
    canonical JSON text, None for `json_object`."""
    if schema is None:
        return FORMAT_HEAD + ONE_OBJECT
    lines = [SCHEMA_OBJECT]
    if name:
        lines.append(f"Name: {name}")
    if description:
        lines.append(f"Description: {description}")
    lines.append(f"<schema>\n{schema}\n</schema>")
    return FORMAT_HEAD + "\n".join(lines)
