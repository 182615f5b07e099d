"""Metadata database: SQLAlchemy 2 engines and Alembic migrations.

SQLite (a file) is the embedded default; PostgreSQL in compose/Kubernetes. Each service owns its
tables and its migration history (a separate Alembic version table), so several services may share
one database without reading each other's tables.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, sessionmaker


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the one writer; foreign keys are off by default.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine, migrations_dir: Path, version_table: str) -> None:
    """Upgrade this service's tables to the newest revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["connection_engine"] = engine
    config.attributes["version_table"] = version_table
    command.upgrade(config, "head")


def run_migrations_online(context, metadata) -> None:
    """Body of a service's migrations/env.py: run with the engine handed over by :func:`migrate`."""
    engine = context.config.attributes["connection_engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=context.config.attributes["version_table"],
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


class Base(DeclarativeBase):
    """Declarative base for kit-owned tables (services declare their own bases)."""
