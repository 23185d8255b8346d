"""Anthropic's Messages API (`POST /v1/messages`) over the same engine, keys, tenants and
prefix cache as the OpenAI endpoints."""
