//! Batch entry points over many segments, parallel with rayon. Every segment is computed on its
//! own and written to its own output slot, so results are identical whatever the thread count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use crate::answers::{answers_agree, extract, output_correct, Answer, GoldNotANumber, Rule};
use crate::bleu::{compute_bleu, segment_stats, BleuOptions, SegmentScratch, Smooth};

/// Segments per parallel work item: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 256;

fn pools() -> &'static Mutex<HashMap<usize, Arc<rayon::ThreadPool>>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Runs `f` on a pool of `threads` threads (None or 0: rayon's global pool, all cores).
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> T {
    match threads {
        None | Some(0) => f(),
        Some(n) => {
            let pool = {
                let mut map = pools().lock().unwrap();
                map.entry(n)
                    .or_insert_with(|| {
                        Arc::new(rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap())
                    })
                    .clone()
            };
            pool.install(f)
        }
    }
}

/// Row width of the statistics matrix for `max_order`.
pub fn stats_width(max_order: usize) -> usize {
    2 + 2 * max_order
}

/// Sufficient statistics of every segment: a row-major (n, 2 + 2*max_order) matrix.
/// `refs[k][i]` is reference stream k's reference for segment i (None = missing).
/// Err(i): segment i (the first such) has no reference in any stream.
pub fn corpus_stats(
    hyps: &[&str],
    refs: &[Vec<Option<&str>>],
    opts: &BleuOptions,
) -> Result<Vec<i64>, usize> {
    let w = stats_width(opts.max_order);
    let mut out = vec![0i64; hyps.len() * w];
    let first_without_reference = out
        .par_chunks_mut(w * CHUNK)
        .enumerate()
        .map_init(
            || (SegmentScratch::default(), Vec::<Option<&str>>::new()),
            |(scratch, seg_refs), (c, block)| {
                let base = c * CHUNK;
                for (j, row) in block.chunks_mut(w).enumerate() {
                    let i = base + j;
                    seg_refs.clear();
                    seg_refs.extend(refs.iter().map(|stream| stream[i]));
                    if segment_stats(hyps[i], seg_refs, opts, scratch, row).is_err() {
                        return Some(i);
                    }
                }
                None
            },
        )
        .flatten()
        .min();
    match first_without_reference {
        Some(i) => Err(i),
        None => Ok(out),
    }
}

/// Column sums of a statistics matrix (integers: exact, order-free).
pub fn sum_stats(stats: &[i64], width: usize) -> Vec<i64> {
    let mut acc = vec![0i64; width];
    for row in stats.chunks(width) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
    acc
}

/// Why a resample-index matrix cannot be scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResampleError {
    /// Resamples of zero segments.
    Empty,
    /// `value` at (row, col) is not a row index of the n statistics rows.
    OutOfRange { row: usize, col: usize, value: i64, n: usize },
}

/// Corpus scores of bootstrap resamples: row r of `resamples` (row-major, `m` indices into the
/// rows of `stats`) picks the segments of resample r, whose statistics are summed exactly as
/// integers and scored once (sacrebleu's `_bootstrap_resample` on the same indices).
pub fn resample_scores(
    stats: &[i64],
    max_order: usize,
    resamples: &[i64],
    m: usize,
    smooth: Smooth,
    effective_order: bool,
) -> Result<Vec<f64>, ResampleError> {
    let w = stats_width(max_order);
    let n = stats.len() / w;
    if m == 0 {
        return Err(ResampleError::Empty);
    }
    if let Some(k) = resamples.iter().position(|&i| i < 0 || i as usize >= n) {
        return Err(ResampleError::OutOfRange { row: k / m, col: k % m, value: resamples[k], n });
    }
    Ok(resamples
        .par_chunks(m)
        .map_init(
            || vec![0i64; w],
            |acc, idx| {
                acc.iter_mut().for_each(|a| *a = 0);
                for &i in idx {
                    let row = &stats[i as usize * w..(i as usize + 1) * w];
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
                compute_bleu(acc, max_order, smooth, effective_order).score
            },
        )
        .collect())
}

/// Sentence scores of every row of a statistics matrix.
pub fn scores_from_stats(stats: &[i64], max_order: usize, smooth: Smooth, effective_order: bool) -> Vec<f64> {
    let w = stats_width(max_order);
    let mut out = vec![0f64; stats.len() / w];
    out.par_chunks_mut(CHUNK * 4).enumerate().for_each(|(c, block)| {
        for (j, o) in block.iter_mut().enumerate() {
            let i = c * CHUNK * 4 + j;
            *o = compute_bleu(&stats[i * w..(i + 1) * w], max_order, smooth, effective_order).score;
        }
    });
    out
}

/// Extracted answers of every text (None = no answer).
pub fn extract_all(texts: &[&str], rule: &Rule) -> Vec<Option<Answer>> {
    texts.par_iter().with_min_len(CHUNK).map(|t| extract(t, rule)).collect()
}

/// Per-item agreement of two output columns (either side without an answer: no agreement).
pub fn agree_all(a: &[&str], b: &[&str], rule: &Rule) -> Vec<bool> {
    a.par_iter()
        .zip(b.par_iter())
        .with_min_len(CHUNK)
        .map(|(x, y)| match (extract(x, rule), extract(y, rule)) {
            (Some(p), Some(q)) => answers_agree(&p, &q, rule),
            _ => false,
        })
        .collect()
}

/// Per-item correctness against gold; Err(i) names the first row whose numeric gold is unreadable.
pub fn correct_all(outputs: &[&str], golds: &[&str], rule: &Rule) -> Result<Vec<bool>, usize> {
    let res: Vec<Result<bool, GoldNotANumber>> = outputs
        .par_iter()
        .zip(golds.par_iter())
        .with_min_len(CHUNK)
        .map(|(o, g)| output_correct(o, g, rule))
        .collect();
    res.into_iter().enumerate().map(|(i, r)| r.map_err(|_| i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::TokenizerKind;

    #[test]
    fn thread_count_does_not_change_results() {
        let hyps: Vec<String> =
            (0..3000).map(|i| format!("the {} cat sat on {} mats, ok.", i % 7, i % 13)).collect();
        let refs: Vec<String> =
            (0..3000).map(|i| format!("a {} cat sat on the {} mat.", i % 5, i % 11)).collect();
        let h: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
        let r: Vec<Option<&str>> = refs.iter().map(|s| Some(s.as_str())).collect();
        let opts = BleuOptions { tokenizer: TokenizerKind::Tok13a, lowercase: false, max_order: 4 };
        let one = with_threads(Some(1), || corpus_stats(&h, std::slice::from_ref(&r), &opts).unwrap());
        let two = with_threads(Some(2), || corpus_stats(&h, std::slice::from_ref(&r), &opts).unwrap());
        let three = with_threads(Some(3), || corpus_stats(&h, std::slice::from_ref(&r), &opts).unwrap());
        assert_eq!(one, two);
        assert_eq!(one, three);
        let s1 = with_threads(Some(1), || scores_from_stats(&one, 4, Smooth::Exp, true));
        let s2 = with_threads(Some(2), || scores_from_stats(&one, 4, Smooth::Exp, true));
        assert_eq!(
            s1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            s2.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn resample_scores_sum_the_picked_rows_and_score_them() {
        let hyps = ["the cat sat on the mat", "a dog", "the the the", "on a mat the cat sat"];
        let refs: Vec<Option<&str>> =
            ["the cat sat on a mat", "a dog barked", "the cat", "the cat sat on a mat"].map(Some).to_vec();
        let opts = BleuOptions { tokenizer: TokenizerKind::Tok13a, lowercase: false, max_order: 4 };
        let stats = corpus_stats(&hyps, &[refs], &opts).unwrap();
        let resamples: [i64; 12] = [0, 0, 0, 0, 3, 2, 1, 0, 1, 1, 3, 3];
        let got = resample_scores(&stats, 4, &resamples, 4, Smooth::Exp, false).unwrap();
        for (r, idx) in resamples.chunks(4).enumerate() {
            let mut sum = vec![0i64; 10];
            for &i in idx {
                for c in 0..10 {
                    sum[c] += stats[i as usize * 10 + c];
                }
            }
            assert_eq!(got[r].to_bits(), compute_bleu(&sum, 4, Smooth::Exp, false).score.to_bits());
        }
        assert_eq!(
            resample_scores(&stats, 4, &[0, 4], 2, Smooth::Exp, false),
            Err(ResampleError::OutOfRange { row: 0, col: 1, value: 4, n: 4 })
        );
        assert_eq!(resample_scores(&stats, 4, &[], 0, Smooth::Exp, false), Err(ResampleError::Empty));
    }

    #[test]
    fn a_segment_without_references_names_the_first_such_row() {
        let hyps: Vec<String> = (0..1000).map(|i| format!("w{i} x")).collect();
        let h: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
        let a: Vec<Option<&str>> = (0..1000).map(|i| if i % 300 == 299 { None } else { Some("x") }).collect();
        let b: Vec<Option<&str>> = (0..1000).map(|i| if i >= 500 { None } else { Some("y") }).collect();
        let opts = BleuOptions { tokenizer: TokenizerKind::Tok13a, lowercase: false, max_order: 4 };
        // rows 299, 599 and 899 lack a; b is missing from row 500 on, so 599 is the first with neither
        assert_eq!(with_threads(Some(2), || corpus_stats(&h, &[a.clone(), b.clone()], &opts)), Err(599));
        assert_eq!(with_threads(Some(2), || corpus_stats(&h, std::slice::from_ref(&a), &opts)), Err(299));
    }
}
