"""What `check` looks at and prints: the security report, the project's own files, moved imports."""
