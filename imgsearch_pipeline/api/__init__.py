"""The search service: a FastAPI app and a web page over the live index."""
