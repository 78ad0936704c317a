//! whomp end-to-end tests.
