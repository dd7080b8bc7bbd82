"""The book's tooling (build, notebook runs, table of contents): run from a checkout, not installed."""
