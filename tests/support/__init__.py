"""What only the tests use: the toy task."""
