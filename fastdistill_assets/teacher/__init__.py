"""Inference plane: provider gateway, response cache, embedded OpenAI-compatible server."""
