"""Items into prompts: sources, stories and the held-out split, the curriculum."""
