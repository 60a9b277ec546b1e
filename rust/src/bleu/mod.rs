//! BLEU exactly as sacreBLEU 2.6 computes it: per-segment sufficient statistics (hypothesis
//! length, closest reference length, matched and total n-grams per order) and the score from
//! statistics with smoothing (none, floor, add-k, exp) and effective order.
//!
//! Speed: tokens of one segment are interned to small integer ids (tokens of up to 8 bytes compared
//! as one machine word plus length, longer ones by hash and bytes), n-grams of up to 4 ids are
//! packed into one integer key (16-bit ids in a u64, 32-bit ids in a u128 when a segment has 65535+
//! distinct tokens; orders 5..=9 use an array of ids) and counted in a reused open-addressing table whose slots hold key and counts
//! together; epoch stamps empty both tables between segments without clearing them, and all buffers
//! live in per-thread scratch space, so a segment allocates nothing in steady state. Segments are
//! independent; the results never depend on threads.
//!
//! Modules: `formula` (the score from statistics), `ngrams` (the interner and the n-gram count
//! table) and `stats` (one segment's statistics, built on the tables).

pub mod formula;
mod ngrams;
pub mod stats;

pub use formula::{compute_bleu, Score, Smooth, MAX_ORDER};
pub use stats::{closest_ref_len, segment_stats, BleuOptions, NoReference, SegmentScratch, NUM_STATS};
