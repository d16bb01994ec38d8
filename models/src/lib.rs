//! # models — model serving for Squall's functions
//!
//! What the prediction pipeline needs, as plain library code plus the
//! executor functions that wrap it:
//!
//! * [`tensor`] — how tensors travel between functions (little-endian f32
//!   bytes), averaging, and top-k with labels;
//! * [`image_input`] — decoding PNG/JPEG and turning it into the 224×224
//!   BGR, 0–255, NCHW tensor SqueezeNet expects;
//! * [`onnx`] — an ONNX model loaded and optimised once with `tract`
//!   (pure Rust), run many times;
//!
//! The node wraps these as executor functions (`dataplane::model_fns`:
//! `preprocess`, `average`, `top5` and one model function per
//! `squall model put`).
//!
//! ## Boundary
//! `models` depends on no other Squall crate and no runtime: bytes in,
//! bytes out. So the node's functions and the in-process floors of
//! `loadgen squeezenet` run exactly the same code, and `scripts/check-deps.sh`
//! keeps it that way.

pub mod image_input;
pub mod limits;
pub mod onnx;
pub mod tensor;

use std::path::PathBuf;

use thiserror::Error;

/// Where the reference SqueezeNet files (weights, labels, sample images)
/// are, for tests and benchmarks: `$SQUALL_MODELS_DIR`, else
/// `../shared/models` beside the checkout.
#[must_use]
pub fn reference_dir() -> PathBuf {
    std::env::var_os("SQUALL_MODELS_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models")),
        PathBuf::from,
    )
}

/// A file of [`reference_dir`]; panics naming the path if it cannot be
/// read (for tests and benchmarks).
#[must_use]
pub fn reference_file(file: &str) -> Vec<u8> {
    let path = reference_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the reference models live in ../shared/models beside the checkout; \
             set SQUALL_MODELS_DIR to use another folder)",
            path.display()
        )
    })
}

/// Why a model step failed; each says what to fix.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("not a decodable PNG or JPEG image: {0}")]
    BadImage(String),
    #[error("the input tensor must be {expected} bytes ({shape:?} f32), not {got}")]
    BadTensor {
        expected: usize,
        shape: Vec<usize>,
        got: usize,
    },
    #[error("{0}")]
    BadArgs(String),
    #[error("not a usable ONNX model: {0}")]
    BadModel(String),
    #[error("inference failed: {0}")]
    Inference(String),
}
