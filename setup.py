"""Packaging beyond what pyproject.toml can say: the repository's top-level ``recipes/`` folder is installed inside the
package as ``mmcontrast.bundled_recipes`` (its ``*.yaml`` files are package data, listed in pyproject.toml), so
``mmcontrast recipes list`` / ``copy`` work after a plain ``pip install``. Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["mmcontrast*"]), "mmcontrast.bundled_recipes"],
    package_dir={"mmcontrast.bundled_recipes": "recipes"},
)
