"""Pydantic models shared by every room. JSON field names are camelCase."""
