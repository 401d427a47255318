"""Pure media stages: paths/streams and schemas in, schemas out. No queue, HTTP or DB."""
