//! whomp
