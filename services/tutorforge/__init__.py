"""tutorforge: turn teaching material into Socratic tutor models and serve them to chatbots."""

__version__ = "0.1.0"
