//! A typed HTTP client for the sandbox's control API and common resources.
