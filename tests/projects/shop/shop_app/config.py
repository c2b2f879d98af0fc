"""Settings read once, at import, from the environment (as many FastAPI apps do)."""

from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    database_url: str  # required: DATABASE_URL
    echo_sql: bool = False


settings = Settings()
