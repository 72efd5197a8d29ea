"""Configuration files, one per environment; shipped with the code so the defaults travel to every node."""
