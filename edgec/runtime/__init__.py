"""Runtimes that load and run compiled artifacts; one module per backend, imported lazily."""
