"""Shipped run configs (YAML) and their generator; see README.md here."""
