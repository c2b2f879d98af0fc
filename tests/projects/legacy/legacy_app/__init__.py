"""An application older than its migrations: its first tables came from create_all."""
