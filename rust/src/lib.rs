//! kdlens native core. Pure-Rust logic lives in its own modules (tokenize, bleu, answers, batch);
//! `py.rs` is the only file that knows about Python and is compiled only with the `python` feature
//! (maturin turns it on). `cargo test --release` tests the core without Python.

pub mod answers;
pub mod batch;
pub mod bleu;
pub mod tokenize;
pub mod unicode_tables;

#[cfg(feature = "python")]
mod py;
