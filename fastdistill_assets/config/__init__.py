"""Configuration: the typed models (the only copy of every default), loading them from YAML and the environment, the registry of frozen runs, and where things are on disk."""
