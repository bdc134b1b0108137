"""One module per defence; tools reach them through `guard`."""
