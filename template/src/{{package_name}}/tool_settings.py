"""Settings for your own tools. This file is yours: the template created it once and never changes it
(`_skip_if_exists` in the template's copier.yml), so `copier update` cannot conflict with what you add.

Each field is a setting like the template's: read from the environment or `.env` as MCP_ plus the field
name in capitals, validated when the server starts (a bad value stops it, naming the variable), listed
among the known names (so MCP_REPORTS_URL in .env is not "unknown"), and, if it is a SecretStr, scrubbed
from events, logs and results. A tool module reads it as `settings.<field>`. For example (with
`from pydantic import Field, SecretStr`):

    reports_url: str = "https://reports.example.com"                # MCP_REPORTS_URL
    reports_token: SecretStr = SecretStr("")                       # MCP_REPORTS_TOKEN, kept secret
    reports_timeout_seconds: float = Field(default=10, gt=0, le=60)  # MCP_REPORTS_TIMEOUT_SECONDS

Document each one here, next to its field, for whoever runs the server.
"""

from __future__ import annotations

from pydantic import BaseModel


class ToolSettings(BaseModel):
    """Fields here join `Settings` (settings.py); none by default."""
