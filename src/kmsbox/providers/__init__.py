"""Built-in KEK providers."""
