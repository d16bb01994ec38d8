//! ONNX models with `tract`: parsed, typed and optimised once at load,
//! then run with a reused state.

use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::tensor::{from_bytes, to_bytes};
use crate::ModelError;

type Plan = TypedSimplePlan;

/// A loaded, optimised model with one fixed-shape f32 input and output.
#[derive(Debug)]
pub struct Model {
    plan: Arc<Plan>,
    state: TypedSimpleState,
    input_shape: Vec<usize>,
    input_bytes: usize,
}

impl Model {
    /// Parses and optimises an ONNX file's bytes (≈ 70 ms for SqueezeNet).
    /// The model must declare a concrete input shape.
    pub fn load(onnx: &[u8]) -> Result<Model, ModelError> {
        let bad = |e: TractError| ModelError::BadModel(format!("{e:#}"));
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(bad)?
            .into_optimized()
            .map_err(bad)?;
        let fact = model.input_fact(0).map_err(bad)?;
        if fact.datum_type != f32::datum_type() {
            return Err(ModelError::BadModel(format!(
                "its input is {:?}, not f32",
                fact.datum_type
            )));
        }
        let Some(input_shape) = fact.shape.as_concrete().map(<[usize]>::to_vec) else {
            return Err(ModelError::BadModel(format!(
                "its input shape {:?} is not fixed",
                fact.shape
            )));
        };
        let input_bytes = input_shape.iter().product::<usize>() * 4;
        let plan = model.into_runnable().map_err(bad)?;
        let state = plan.spawn().map_err(bad)?;
        Ok(Model {
            plan,
            state,
            input_shape,
            input_bytes,
        })
    }

    /// The input shape the model takes.
    #[must_use]
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Runs one inference on a little-endian f32 tensor of the input
    /// shape; returns the first output, flattened, as little-endian f32.
    pub fn run(&mut self, input: &[u8]) -> Result<Vec<u8>, ModelError> {
        if input.len() != self.input_bytes {
            return Err(ModelError::BadTensor {
                expected: self.input_bytes,
                shape: self.input_shape.clone(),
                got: input.len(),
            });
        }
        let values = from_bytes(input)?;
        let tensor = Tensor::from_shape(&self.input_shape, &values)
            .map_err(|e| ModelError::Inference(format!("{e:#}")))?;
        let outputs = self
            .state
            .run(tvec!(tensor.into()))
            .map_err(|e| ModelError::Inference(format!("{e:#}")))?;
        let first = outputs
            .first()
            .ok_or_else(|| ModelError::Inference("the model produced no output".into()))?;
        let view = first
            .try_as_plain_ram()
            .map_err(|e| ModelError::Inference(format!("{e:#}")))?;
        let out = view
            .as_slice::<f32>()
            .map_err(|e| ModelError::Inference(format!("output is not f32: {e:#}")))?;
        Ok(to_bytes(out))
    }

    /// Another instance sharing this one's optimised plan (for threads).
    pub fn fork(&self) -> Result<Model, ModelError> {
        Ok(Model {
            plan: Arc::clone(&self.plan),
            state: self
                .plan
                .spawn()
                .map_err(|e| ModelError::BadModel(format!("{e:#}")))?,
            input_shape: self.input_shape.clone(),
            input_bytes: self.input_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_input::preprocess;
    use crate::tensor::{from_bytes, parse_labels, top_k};

    use crate::reference_file as shared;

    #[test]
    fn squeezenet_classifies_the_reference_images_like_onnxruntime() {
        let mut model = Model::load(&shared("squeezenet1.1_fp32.onnx")).unwrap();
        assert_eq!(model.input_shape(), [1, 3, 224, 224]);
        let labels_text = String::from_utf8(shared("imagenet_labels.txt")).unwrap();
        let labels = parse_labels(&labels_text).unwrap();
        // onnxruntime 1.32: kitten 281 p=0.931458, fish 0 p=0.737677.
        for (image, class, p, label) in [
            ("kitten_224.png", 281, 0.931_458, "tabby, tabby cat"),
            ("fish.png", 0, 0.737_677, "tench, Tinca tinca"),
        ] {
            let out = model.run(&preprocess(&shared(image)).unwrap()).unwrap();
            let probabilities = from_bytes(&out).unwrap();
            let best = &top_k(&probabilities, &labels, 5).unwrap()[0];
            assert_eq!((best.class, best.label), (class, label), "{image}");
            assert!(
                (best.probability - p).abs() < 1e-3,
                "{image}: {}",
                best.probability
            );
        }
        let forked = model.fork().unwrap();
        assert_eq!(forked.input_shape(), model.input_shape());
    }

    #[test]
    fn wrong_sized_tensors_and_non_models_are_refused() {
        let mut model = Model::load(&shared("squeezenet1.1_fp32.onnx")).unwrap();
        let e = model.run(&[0; 12]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the input tensor must be 602112 bytes ([1, 3, 224, 224] f32), not 12"
        );
        let e = Model::load(b"not onnx at all").unwrap_err();
        assert!(matches!(e, ModelError::BadModel(_)), "{e}");
    }
}
