//! The Python face of the native core: converts inputs once, releases the GIL, returns arrays.
//!
//! Text columns arrive either as a Python list of `str` (read in place: the list's strings are
//! kept alive and their UTF-8 bytes borrowed, nothing is copied) or as Arrow-style buffers
//! `(offsets: int64[n+1], data: uint8[m], valid: bool[n] | None)` borrowed from numpy views of
//! pyarrow/Polars columns. kdlens.metrics does the conversion; these functions are private API.
use std::borrow::Cow;

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::answers::{answer_text, Rule};
use crate::batch::{self, ResampleError};
use crate::bleu::{compute_bleu, BleuOptions, Smooth, MAX_ORDER};
use crate::tokenize::{tokenize_to_string, TokenizerKind};
use crate::unicode_tables;

/// A text column held for the duration of one call.
enum Column<'py> {
    List(Vec<Option<Bound<'py, PyString>>>),
    Arrow {
        offsets: PyReadonlyArray1<'py, i64>,
        data: PyReadonlyArray1<'py, u8>,
        valid: Option<PyReadonlyArray1<'py, bool>>,
    },
}

fn column<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Column<'py>> {
    if let Ok(list) = obj.cast::<PyList>() {
        let mut items = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            if item.is_none() {
                items.push(None);
            } else {
                match item.cast_into::<PyString>() {
                    Ok(s) => items.push(Some(s)),
                    Err(e) => {
                        return Err(PyTypeError::new_err(format!(
                            "{what}[{i}] is a {}, not a str",
                            e.into_inner().get_type().name()?
                        )))
                    }
                }
            }
        }
        return Ok(Column::List(items));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        if t.len() == 3 {
            let offsets: PyReadonlyArray1<i64> = t.get_item(0)?.extract()?;
            let data: PyReadonlyArray1<u8> = t.get_item(1)?.extract()?;
            let v = t.get_item(2)?;
            let valid = if v.is_none() { None } else { Some(v.extract()?) };
            return Ok(Column::Arrow { offsets, data, valid });
        }
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a list of str or an (offsets, data, validity) tuple of numpy arrays"
    )))
}

impl<'py> Column<'py> {
    /// Borrowed views of every row (None = null).
    fn views(&self, what: &str) -> PyResult<Vec<Option<&str>>> {
        match self {
            Column::List(items) => items.iter().map(|o| o.as_ref().map(|s| s.to_str()).transpose()).collect(),
            Column::Arrow { offsets, data, valid } => {
                let off = offsets.as_slice()?;
                let bytes = data.as_slice()?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| PyValueError::new_err(format!("{what}: not UTF-8: {e}")))?;
                let n = off.len().saturating_sub(1);
                let valid = match valid {
                    Some(v) => Some(v.as_slice()?),
                    None => None,
                };
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    let (a, b) = (off[i] as usize, off[i + 1] as usize);
                    if off[i] < 0
                        || a > b
                        || b > bytes.len()
                        || !text.is_char_boundary(a)
                        || !text.is_char_boundary(b)
                    {
                        return Err(PyValueError::new_err(format!("{what}: bad offsets at row {i}")));
                    }
                    if valid.is_none_or(|v| v[i]) {
                        out.push(Some(&text[a..b]));
                    } else {
                        out.push(None);
                    }
                }
                Ok(out)
            }
        }
    }
}

fn non_null<'a>(views: Vec<Option<&'a str>>, what: &str) -> PyResult<Vec<&'a str>> {
    let mut out = Vec::with_capacity(views.len());
    for (i, v) in views.into_iter().enumerate() {
        match v {
            Some(s) => out.push(s),
            None => {
                return Err(PyValueError::new_err(format!(
                    "{what}[{i}] is null (None); every row needs a string"
                )))
            }
        }
    }
    Ok(out)
}

fn tokenizer_kind(name: &str) -> PyResult<TokenizerKind> {
    TokenizerKind::parse(name).ok_or_else(|| {
        PyValueError::new_err(format!("unknown tokenizer {name:?}; use one of 13a, intl, zh, char, none"))
    })
}

fn smooth(method: &str, value: Option<f64>) -> PyResult<Smooth> {
    Smooth::parse(method, value).ok_or_else(|| {
        PyValueError::new_err(format!("unknown smooth_method {method:?}; use one of exp, floor, add-k, none"))
    })
}

fn check_order(max_order: usize) -> PyResult<()> {
    if max_order == 0 || max_order > MAX_ORDER {
        return Err(PyValueError::new_err(format!(
            "max_ngram_order must be 1..={MAX_ORDER}, got {max_order}"
        )));
    }
    Ok(())
}

/// Sufficient statistics, shape (n, 2 + 2*max_order): hyp_len, ref_len, correct.., total...
#[pyfunction]
#[pyo3(signature = (hyps, refs, tokenize="13a", lowercase=false, max_order=4, num_threads=None))]
fn bleu_stats<'py>(
    py: Python<'py>,
    hyps: &Bound<'py, PyAny>,
    refs: Vec<Bound<'py, PyAny>>,
    tokenize: &str,
    lowercase: bool,
    max_order: usize,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    check_order(max_order)?;
    let opts = BleuOptions { tokenizer: tokenizer_kind(tokenize)?, lowercase, max_order };
    let hyp_col = column(hyps, "hyps")?;
    let hyp_views = non_null(hyp_col.views("hyps")?, "hyps")?;
    let ref_cols: Vec<Column> =
        refs.iter().enumerate().map(|(k, r)| column(r, &format!("refs[{k}]"))).collect::<PyResult<_>>()?;
    let mut streams = Vec::with_capacity(ref_cols.len());
    for (k, c) in ref_cols.iter().enumerate() {
        let v = c.views(&format!("refs[{k}]"))?;
        if v.len() != hyp_views.len() {
            return Err(PyValueError::new_err(format!(
                "reference stream {k} has {} rows but there are {} hypotheses",
                v.len(),
                hyp_views.len()
            )));
        }
        streams.push(v);
    }
    if streams.is_empty() {
        return Err(PyValueError::new_err("at least one reference stream is needed"));
    }
    let n = hyp_views.len();
    let flat = py
        .detach(|| batch::with_threads(num_threads, || batch::corpus_stats(&hyp_views, &streams, &opts)))
        .map_err(|i| {
            PyValueError::new_err(format!(
                "segment {i} has no reference: every reference stream is None there (sacreBLEU \
                     cannot score it either); give each segment at least one reference"
            ))
        })?;
    let arr = PyArray1::from_vec(py, flat);
    Ok(arr.reshape([n, batch::stats_width(max_order)])?.into_any())
}

/// Sentence scores of each row of a statistics matrix.
#[pyfunction]
#[pyo3(signature = (stats, max_order=4, smooth_method="exp", smooth_value=None, effective_order=true, num_threads=None))]
fn scores_from_stats<'py>(
    py: Python<'py>,
    stats: PyReadonlyArray2<'py, i64>,
    max_order: usize,
    smooth_method: &str,
    smooth_value: Option<f64>,
    effective_order: bool,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    check_order(max_order)?;
    let sm = smooth(smooth_method, smooth_value)?;
    let s = stats_matrix(&stats, max_order)?;
    let out = py.detach(|| {
        batch::with_threads(num_threads, || batch::scores_from_stats(&s, max_order, sm, effective_order))
    });
    Ok(PyArray1::from_vec(py, out))
}

/// A row-major view of an int64 matrix (copied only when numpy's layout is not C-contiguous).
/// (`as_slice` alone also accepts Fortran order, whose memory is column-major.)
fn row_major<'a>(m: &'a PyReadonlyArray2<'_, i64>) -> Cow<'a, [i64]> {
    match m.as_slice() {
        Ok(s) if m.is_c_contiguous() => Cow::Borrowed(s),
        _ => Cow::Owned(m.as_array().iter().copied().collect()),
    }
}

/// A statistics matrix with the columns `max_order` needs, row-major.
fn stats_matrix<'a>(stats: &'a PyReadonlyArray2<'_, i64>, max_order: usize) -> PyResult<Cow<'a, [i64]>> {
    let width = batch::stats_width(max_order);
    if stats.shape()[1] != width {
        return Err(PyValueError::new_err(format!(
            "stats must have {width} columns (2 + 2 * max_order), got {}",
            stats.shape()[1]
        )));
    }
    Ok(row_major(stats))
}

/// Corpus BLEU of each bootstrap resample: row r of `resamples` holds the row indices (into
/// `stats`) of resample r's segments; their statistics are summed exactly and scored once.
#[pyfunction]
#[pyo3(signature = (stats, resamples, max_order=4, smooth_method="exp", smooth_value=None, effective_order=false, num_threads=None))]
#[allow(clippy::too_many_arguments)]
fn resample_scores<'py>(
    py: Python<'py>,
    stats: PyReadonlyArray2<'py, i64>,
    resamples: PyReadonlyArray2<'py, i64>,
    max_order: usize,
    smooth_method: &str,
    smooth_value: Option<f64>,
    effective_order: bool,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    check_order(max_order)?;
    let sm = smooth(smooth_method, smooth_value)?;
    let s = stats_matrix(&stats, max_order)?;
    let m = resamples.shape()[1];
    let idx = row_major(&resamples);
    let out = py
        .detach(|| {
            batch::with_threads(num_threads, || {
                batch::resample_scores(&s, max_order, &idx, m, sm, effective_order)
            })
        })
        .map_err(|e| match e {
            ResampleError::Empty => PyValueError::new_err("resamples must pick at least one segment each"),
            ResampleError::OutOfRange { row, col, value, n } => PyValueError::new_err(format!(
                "resamples[{row}, {col}] = {value} is not a row of stats (0..{n})"
            )),
        })?;
    Ok(PyArray1::from_vec(py, out))
}

/// One score from one (summed) statistics row: (score, precisions, bp).
#[pyfunction]
#[pyo3(signature = (row, max_order=4, smooth_method="exp", smooth_value=None, effective_order=false))]
fn score_from_row(
    row: Vec<i64>,
    max_order: usize,
    smooth_method: &str,
    smooth_value: Option<f64>,
    effective_order: bool,
) -> PyResult<(f64, Vec<f64>, f64)> {
    check_order(max_order)?;
    if row.len() != batch::stats_width(max_order) {
        return Err(PyValueError::new_err(format!("row must have {} values", batch::stats_width(max_order))));
    }
    let sc = compute_bleu(&row, max_order, smooth(smooth_method, smooth_value)?, effective_order);
    Ok((sc.score, sc.precisions[..max_order].to_vec(), sc.bp))
}

/// The parts sacreBLEU's BLEUScore reports for one (summed) statistics row:
/// (score, precisions, bp, counts, totals), with counts/totals as sacreBLEU has them after add-k.
#[pyfunction]
#[pyo3(signature = (row, max_order=4, smooth_method="exp", smooth_value=None, effective_order=false))]
#[allow(clippy::type_complexity)]
fn score_parts(
    row: Vec<i64>,
    max_order: usize,
    smooth_method: &str,
    smooth_value: Option<f64>,
    effective_order: bool,
) -> PyResult<(f64, Vec<f64>, f64, Vec<f64>, Vec<f64>)> {
    check_order(max_order)?;
    if row.len() != batch::stats_width(max_order) {
        return Err(PyValueError::new_err(format!("row must have {} values", batch::stats_width(max_order))));
    }
    let sc = compute_bleu(&row, max_order, smooth(smooth_method, smooth_value)?, effective_order);
    Ok((
        sc.score,
        sc.precisions[..max_order].to_vec(),
        sc.bp,
        sc.counts[..max_order].to_vec(),
        sc.totals[..max_order].to_vec(),
    ))
}

/// sacrebleu's preprocessing + tokenizer, tokens joined by single spaces (for tests and debugging).
#[pyfunction]
#[pyo3(signature = (text, tokenize="13a", lowercase=false))]
fn tokenize(text: &str, tokenize: &str, lowercase: bool) -> PyResult<String> {
    Ok(tokenize_to_string(text, tokenizer_kind(tokenize)?, lowercase))
}

fn rule(kind: &str, labels: Vec<String>, tolerance: f64) -> PyResult<Rule> {
    match kind {
        "last_number" => Ok(Rule::LastNumber { tolerance }),
        "first_match" => {
            if labels.is_empty() {
                return Err(PyValueError::new_err("a first_match rule needs at least one label"));
            }
            Ok(Rule::FirstMatch { labels })
        }
        _ => Err(PyValueError::new_err(format!("unknown rule kind {kind:?}"))),
    }
}

/// Extracted answers (str or None) of every text.
#[pyfunction]
#[pyo3(signature = (texts, kind, labels, tolerance, num_threads=None))]
fn extract_answers<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    kind: &str,
    labels: Vec<String>,
    tolerance: f64,
    num_threads: Option<usize>,
) -> PyResult<Vec<Option<String>>> {
    let r = rule(kind, labels, tolerance)?;
    let col = column(texts, "texts")?;
    let views = non_null(col.views("texts")?, "texts")?;
    let answers = py.detach(|| batch::with_threads(num_threads, || batch::extract_all(&views, &r)));
    Ok(answers.into_iter().map(|a| a.map(|a| answer_text(&a, &r))).collect())
}

/// Per-item agreement (bool array) of two output columns.
#[pyfunction]
#[pyo3(signature = (a, b, kind, labels, tolerance, num_threads=None))]
fn agreement<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    kind: &str,
    labels: Vec<String>,
    tolerance: f64,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<bool>>> {
    let r = rule(kind, labels, tolerance)?;
    let out =
        with_row_pairs(a, b, ["teacher", "student"], ["teacher outputs", "student outputs"], |va, vb| {
            Ok(py.detach(|| batch::with_threads(num_threads, || batch::agree_all(va, vb, &r))))
        })?;
    Ok(PyArray1::from_vec(py, out))
}

/// Per-item correctness (bool array) of outputs against gold answers.
#[pyfunction]
#[pyo3(signature = (outputs, golds, kind, labels, tolerance, num_threads=None))]
fn correct<'py>(
    py: Python<'py>,
    outputs: &Bound<'py, PyAny>,
    golds: &Bound<'py, PyAny>,
    kind: &str,
    labels: Vec<String>,
    tolerance: f64,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<bool>>> {
    let r = rule(kind, labels, tolerance)?;
    let out = with_row_pairs(outputs, golds, ["outputs", "golds"], ["outputs", "gold answers"], |vo, vg| {
        py.detach(|| batch::with_threads(num_threads, || batch::correct_all(vo, vg, &r))).map_err(|i| {
            PyValueError::new_err(format!("gold answer at row {i} ({:?}) is not a number", vg[i]))
        })
    })?;
    Ok(PyArray1::from_vec(py, out))
}

/// Run `f` on two equally long, null-free string columns (row i of one pairs with row i of the
/// other). `names` name the columns in null errors, `counted` the rows in the length error.
fn with_row_pairs<'py, T>(
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    names: [&str; 2],
    counted: [&str; 2],
    f: impl FnOnce(&[&str], &[&str]) -> PyResult<T>,
) -> PyResult<T> {
    let (ca, cb) = (column(a, names[0])?, column(b, names[1])?);
    let (va, vb) = (non_null(ca.views(names[0])?, names[0])?, non_null(cb.views(names[1])?, names[1])?);
    if va.len() != vb.len() {
        return Err(PyValueError::new_err(format!(
            "{} {} but {} {}",
            va.len(),
            counted[0],
            vb.len(),
            counted[1]
        )));
    }
    f(&va, &vb)
}

/// Python's str.lower() as kdlens implements it (for the exhaustive Unicode tests).
#[pyfunction]
fn py_lower(text: &str) -> String {
    let mut out = String::new();
    crate::tokenize::py_lower_into(text, &mut out);
    out
}

/// Per code point 0..=0x10FFFF (surrogates 0): bit 0 Python whitespace, 1 regex \p{N},
/// 2 \p{P}, 3 \p{S}, 4 Python decimal digit; for the exhaustive Unicode tests.
#[pyfunction]
fn char_classes<'py>(py: Python<'py>) -> Bound<'py, PyArray1<u8>> {
    let mut out = vec![0u8; 0x110000];
    for (cp, o) in out.iter_mut().enumerate() {
        if let Some(c) = char::from_u32(cp as u32) {
            *o = crate::tokenize::char_class_bits(c)
                | if crate::answers::py_decimal_value(c).is_some() { 16 } else { 0 };
        }
    }
    PyArray1::from_vec(py, out)
}

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PYTHON_UNIDATA_VERSION", unicode_tables::PYTHON_UNIDATA_VERSION)?;
    m.add("REGEX_VERSION", unicode_tables::REGEX_VERSION)?;
    m.add_function(wrap_pyfunction!(bleu_stats, m)?)?;
    m.add_function(wrap_pyfunction!(scores_from_stats, m)?)?;
    m.add_function(wrap_pyfunction!(resample_scores, m)?)?;
    m.add_function(wrap_pyfunction!(score_from_row, m)?)?;
    m.add_function(wrap_pyfunction!(score_parts, m)?)?;
    m.add_function(wrap_pyfunction!(tokenize, m)?)?;
    m.add_function(wrap_pyfunction!(py_lower, m)?)?;
    m.add_function(wrap_pyfunction!(char_classes, m)?)?;
    m.add_function(wrap_pyfunction!(extract_answers, m)?)?;
    m.add_function(wrap_pyfunction!(agreement, m)?)?;
    m.add_function(wrap_pyfunction!(correct, m)?)?;
    Ok(())
}
