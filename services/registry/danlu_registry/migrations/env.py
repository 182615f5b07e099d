"""Alembic environment of the registry (run through danlu_kit.db.migrate)."""

from alembic import context

from danlu_kit.db import run_migrations_online
from danlu_registry.adapters.db import Base

run_migrations_online(context, Base.metadata)
