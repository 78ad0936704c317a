//! whimp end-to-end tests.
