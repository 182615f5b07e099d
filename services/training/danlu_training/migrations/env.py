"""Alembic environment of the training service (run through danlu_kit.db.migrate)."""

from alembic import context

from danlu_kit.db import run_migrations_online
from danlu_training.adapters.db import Base

run_migrations_online(context, Base.metadata)
