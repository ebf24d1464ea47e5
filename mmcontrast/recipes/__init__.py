"""Recipes: one module per method, each with its typed schema and a ``build`` that returns the engine's parts."""
