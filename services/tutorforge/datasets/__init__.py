"""Socratic tutoring datasets: sources, validation, de-duplication, splits and versions."""
