"""The worker: a coordinator process and its pool of executor processes."""
