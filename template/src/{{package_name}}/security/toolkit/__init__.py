"""What tools import: confined paths, checked URLs, private per-caller data, the sandbox."""
