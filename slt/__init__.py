"""slt-jax: singular learning theory quantities for real training runs, in JAX."""
