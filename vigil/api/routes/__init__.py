"""The API's resources, one module per subject; ``vigil.api.app`` mounts them under /api/v1."""
