"""Task metrics (each module scores one task; paper definitions, library implementations)."""
