"""Alembic environment of the conversion service (run through danlu_kit.db.migrate)."""

from alembic import context

from danlu_conversion.adapters.db import Base
from danlu_kit.db import run_migrations_online

run_migrations_online(context, Base.metadata)
