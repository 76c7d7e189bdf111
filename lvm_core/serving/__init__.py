"""Serving: the FastAPI inference service (`lvm serve`) and the model holder that follows a registry alias."""
