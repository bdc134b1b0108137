"""Assembly: the MCP server with its guard, the services it opens, the SDK adapter, observability."""
