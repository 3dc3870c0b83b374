"""The publishing pipeline: profiles, the notebook runner, results files, the claims page, the book and the CLI."""
