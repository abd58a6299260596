"""Local development: PostgreSQL and Redis from pip packages, and the RUN command."""
