"""Shared core: settings, server bootstrap, errors, storage, jobs and model provisioning."""
