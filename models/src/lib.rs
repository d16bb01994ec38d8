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

use thiserror::Error;

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
