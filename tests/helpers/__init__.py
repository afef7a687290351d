"""Shared test helpers (imported as `helpers.*`; pytest puts tests/ on sys.path): tiny IDX data, the CLI
as a subprocess, real PostgreSQL and MLflow servers on loopback."""
