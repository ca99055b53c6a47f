"""Registries: the distribution API client, credentials, and pulling into the image store."""
