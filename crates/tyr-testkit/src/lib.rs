//! Test-only helpers: start server and daemon on temporary directories and free ports.
