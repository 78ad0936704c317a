//! netguard
