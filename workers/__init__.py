"""dramatiq broker set-up, middleware and actors: the glue between stages and state."""
