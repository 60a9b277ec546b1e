//! kdlens native core. Pure-Rust logic lives in its own modules; `py.rs` is the only file that
//! knows about Python and is compiled only with the `python` feature (maturin turns it on).

#[cfg(feature = "python")]
mod py;
