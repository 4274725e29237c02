"""Access: what a principal receives at an application (claims and attribute release)."""
