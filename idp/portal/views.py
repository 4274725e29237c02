"""The portal page (/portal)."""
