"""A keyturn target for a token service (see README.md); keyturn finds it by entry point."""
