"""What differs between providers, as data: for now the endpoint a run talks to by default."""

from __future__ import annotations

#: the API base URL when neither ``--base-url`` nor ``$OPENAI_BASE_URL`` names one
DEFAULT_BASE_URL = "https://api.openai.com/v1"
