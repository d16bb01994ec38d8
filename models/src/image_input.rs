//! Images in, model input tensors out.
//!
//! SqueezeNet 1.1 (as converted for WinML, `../shared/models/README.md`)
//! takes `[1, 3, 224, 224]` f32: channels **BGR**, values **0–255**, no mean
//! subtraction, no scaling. Images of another size are resized so the
//! shorter side is 224 and centre-cropped (the aspect ratio is kept).

use std::io::Cursor;

use image::imageops::FilterType;
use image::{ImageReader, Limits};

use crate::limits::{IMAGE_DECODE_BYTES_MAX, IMAGE_SIDE_MAX, INPUT_SIDE};
use crate::tensor::to_bytes;
use crate::ModelError;

/// Bytes of the tensor [`preprocess`] returns.
pub const TENSOR_BYTES: usize = 3 * (INPUT_SIDE as usize) * (INPUT_SIDE as usize) * 4;

/// Decodes a PNG or JPEG and returns the `[1, 3, 224, 224]` BGR tensor, as
/// little-endian f32 bytes.
pub fn preprocess(encoded: &[u8]) -> Result<Vec<u8>, ModelError> {
    let bad = |e: &dyn std::fmt::Display| ModelError::BadImage(e.to_string());
    let mut reader = ImageReader::new(Cursor::new(encoded))
        .with_guessed_format()
        .map_err(|e| bad(&e))?;
    if reader.format().is_none() {
        return Err(ModelError::BadImage(format!(
            "{} bytes that are neither PNG nor JPEG",
            encoded.len()
        )));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(IMAGE_SIDE_MAX);
    limits.max_image_height = Some(IMAGE_SIDE_MAX);
    limits.max_alloc = Some(IMAGE_DECODE_BYTES_MAX);
    reader.limits(limits);
    let mut img = reader.decode().map_err(|e| bad(&e))?;
    if (img.width(), img.height()) != (INPUT_SIDE, INPUT_SIDE) {
        img = img.resize_to_fill(INPUT_SIDE, INPUT_SIDE, FilterType::Triangle);
    }
    let rgb = img.to_rgb8();
    let plane = (INPUT_SIDE * INPUT_SIDE) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        let [r, g, b] = px.0;
        out[i] = f32::from(b);
        out[plane + i] = f32::from(g);
        out[2 * plane + i] = f32::from(r);
    }
    Ok(to_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

    fn png(img: RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut out, ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn channels_come_out_bgr_planar_and_unscaled() {
        let t = preprocess(&png(RgbImage::from_pixel(224, 224, Rgb([10, 20, 30])))).unwrap();
        let v = crate::tensor::from_bytes(&t).unwrap();
        let plane = 224 * 224;
        assert_eq!(v.len(), 3 * plane);
        assert_eq!((v[0], v[plane], v[2 * plane]), (30.0, 20.0, 10.0));
        assert_eq!(t.len(), TENSOR_BYTES);
    }

    #[test]
    fn other_sizes_are_resized_and_cropped() {
        let t = preprocess(&png(RgbImage::from_pixel(640, 300, Rgb([1, 2, 3])))).unwrap();
        assert_eq!(t.len(), TENSOR_BYTES);
    }

    #[test]
    fn garbage_and_truncated_images_are_refused_with_a_reason() {
        let e = preprocess(b"definitely not an image").unwrap_err();
        assert!(e.to_string().contains("neither PNG nor JPEG"), "{e}");
        let whole = png(RgbImage::from_pixel(50, 50, Rgb([1, 2, 3])));
        let e = preprocess(&whole[..whole.len() / 2]).unwrap_err();
        assert!(matches!(e, ModelError::BadImage(_)), "{e}");
    }
}
