"""Who is calling: principals and API keys."""
