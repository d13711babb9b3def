//! The seed's programs in Rust; see the examples of this package.
