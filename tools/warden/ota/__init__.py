"""Signed over-the-air updates: the update and app-bundle formats (image), the fleet's signing
keys (keys), and pushing an update to a device over MQTT (push)."""
