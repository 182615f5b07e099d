"""danlu Python SDK and CLI."""

from danlu_client.client import Client, RegistryClient
from danlu_client.errors import DanluError

__all__ = ["Client", "DanluError", "RegistryClient"]
