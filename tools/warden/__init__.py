"""Warden host tools: a library with a thin CLI on top (warden.cli)."""
