"""Base models: loading (diffusers folder, single file, built-in tiny demo) and architecture detection."""
