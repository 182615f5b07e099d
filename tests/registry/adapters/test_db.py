"""The registry's migrations build exactly the tables its models declare (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from danlu_kit.db import make_engine
from danlu_registry.adapters.db import VERSION_TABLE, Base, RegistryRepository


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/registry.db"
    return request.getfixturevalue("fresh_postgres_url")


def test_migrations_match_models_and_are_idempotent(database_url):
    engine = make_engine(database_url)
    repository = RegistryRepository(engine)
    repository.migrate()
    repository.migrate()  # a restarted service migrates again: nothing to do
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # Only the registry's own tables count (the version table is Alembic's bookkeeping).
    ours = [
        d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith("alembic_version"))
    ]
    assert ours == []
    with engine.connect() as connection:
        assert (
            MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()
            == "0001"
        )
    engine.dispose()
