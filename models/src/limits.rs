//! Limits of model serving, each with its reason.

/// Widest or tallest image `preprocess` decodes: a 16k-pixel side is far
/// above any camera, and bounds decode memory with [`IMAGE_DECODE_BYTES_MAX`].
pub const IMAGE_SIDE_MAX: u32 = 16_384;

/// Most memory one image decode may allocate (a decompression bomb is
/// refused before it is decoded).
pub const IMAGE_DECODE_BYTES_MAX: u64 = 256 << 20;

/// Side of the square image SqueezeNet (and most ImageNet models) take.
pub const INPUT_SIDE: u32 = 224;

/// How many classes `top5` reports.
pub const TOP_K: usize = 5;
