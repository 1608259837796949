"""vlab package."""
