//! The operator docs against what they describe (filled in with docs/).
