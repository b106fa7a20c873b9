"""Layer 7, tools: command-line tools over pytest runs (validate, flake, matrix, bisect, bench)."""
