"""Config helpers: building objects from ``_target_`` nodes, the config resolvers, the early config check and the run's objective."""
