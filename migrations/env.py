"""Alembic environment: the URL comes from banditd's settings, the tables from app.schema."""

from alembic import context
from sqlalchemy import create_engine, pool

from app.schema import metadata
from app.services import sqlalchemy_url
from app.settings import Settings

target_metadata = metadata


def database_url() -> str:
    return context.config.get_main_option("sqlalchemy.url") or sqlalchemy_url(
        Settings.from_env().database_url
    )


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
