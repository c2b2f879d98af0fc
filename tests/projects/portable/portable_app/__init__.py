"""Tasks and projects, on SQLite in development and PostgreSQL in production."""
