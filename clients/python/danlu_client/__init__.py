"""danlu Python SDK and CLI."""

from danlu_client.client import Client, RegistryClient
from danlu_client.errors import DanluError
from danlu_client.training import TrainingClient

__all__ = ["Client", "DanluError", "RegistryClient", "TrainingClient"]
