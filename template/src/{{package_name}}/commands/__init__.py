"""The developer's subcommands beyond serve and check: dev, install, keys (one module each)."""
