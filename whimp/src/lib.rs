//! whimp
