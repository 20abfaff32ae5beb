"""Pure analyses over a captured trace."""
