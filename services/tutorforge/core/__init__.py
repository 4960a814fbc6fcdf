"""Shared core: settings, server bootstrap, errors, jobs, model provisioning and the rules every service shares."""
