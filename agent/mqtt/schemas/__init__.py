"""JSON Schemas of every MQTT payload (package data)."""
