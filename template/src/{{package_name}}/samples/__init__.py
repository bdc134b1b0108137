"""The template's sample tools, rendered by answer; your own tools go in `tools/`."""
