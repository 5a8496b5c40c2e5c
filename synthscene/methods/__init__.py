"""Methods: thin modules on the shared capture / label / store code."""
