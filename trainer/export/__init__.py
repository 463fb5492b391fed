"""Adapter files: kohya/diffusers layouts, metadata, verification."""
