//! The executor functions of the prediction pipeline, over the `models`
//! crate.
//!
//! * `preprocess(image)` → input tensor ([`models::image_input::preprocess`]);
//! * a model function (registered by `squall model put NAME FILE`, body
//!   `Model(NAME)`) `(tensor)` → output tensor: loads model `NAME` from the
//!   KVS on its first call on an executor, keeps it (parsed, optimised, with
//!   its run state) for later calls, and loads again only when the stored
//!   manifest's hash changes — one small read per call checks that;
//! * `average(t1, …, tn)` → the element-wise mean (inline: microseconds);
//! * `top5([labels,] probabilities)` → `class<TAB>p<TAB>label` lines, best
//!   first; labels are `index,label` lines (the pipeline passes the model's
//!   `squall:labels:<name>` key as a reference argument).

use std::sync::Arc;
use std::time::Instant;

use executor::function::{Context, Factory, FnError, Function, Placement};
use executor::registry::{ModelRuntime, Registry, RegistryError};
use kvs_core::lattice::Value;
use wire::model::{chunk_key, manifest_key, Manifest};

use models::image_input::preprocess;
use models::limits::TOP_K;
use models::onnx::Model;
use models::tensor::{average, format_ranked, from_bytes, parse_labels, top_k};
use models::ModelError;

/// Adds `preprocess`, `average` and `top5` to `registry`.
pub fn register_builtins(registry: &mut Registry) -> Result<(), RegistryError> {
    fn f<F: Function + 'static>(make: fn() -> F) -> Factory {
        Arc::new(move || Box::new(make()) as Box<dyn Function>)
    }
    registry.register("preprocess", f(|| Preprocess))?;
    registry.register_with("average", f(|| Average), Placement::Inline)?;
    registry.register("top5", f(|| Top5))
}

/// Runs models stored in the KVS (see [`wire::model`]).
#[derive(Debug, Default)]
pub struct Runtime;

impl ModelRuntime for Runtime {
    fn function(&self, model: &str) -> Result<(Factory, Placement), String> {
        let model: Arc<str> = Arc::from(model);
        let factory: Factory = Arc::new(move || {
            Box::new(ModelFunction {
                model: Arc::clone(&model),
                loaded: None,
            }) as Box<dyn Function>
        });
        Ok((factory, Placement::Executor))
    }
}

fn failed(cx: &Context<'_>, e: &ModelError) -> FnError {
    cx.fail(e.to_string())
}

fn one_arg<'a>(cx: &Context<'_>, args: &'a [Vec<u8>], what: &str) -> Result<&'a [u8], FnError> {
    match args {
        [one] => Ok(one),
        _ => Err(cx.fail(format!("takes one argument ({what}), not {}", args.len()))),
    }
}

struct Preprocess;

impl Function for Preprocess {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let image = one_arg(cx, args, "a PNG or JPEG image")?;
        preprocess(image).map_err(|e| failed(cx, &e))
    }
}

struct Average;

impl Function for Average {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let tensors: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        average(&tensors).map_err(|e| failed(cx, &e))
    }
}

struct Top5;

impl Function for Top5 {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let (labels, probabilities) = match args {
            [p] => (None, p),
            [l, p] => (Some(l), p),
            _ => {
                return Err(cx.fail(format!(
                    "takes ([labels,] probabilities), not {} arguments",
                    args.len()
                )))
            }
        };
        let probabilities = from_bytes(probabilities).map_err(|e| failed(cx, &e))?;
        let text = match labels {
            Some(l) => std::str::from_utf8(l).map_err(|_| cx.fail("labels are not UTF-8"))?,
            None => "",
        };
        let mut labels = parse_labels(text).map_err(|e| failed(cx, &e))?;
        if labels.is_empty() {
            labels = vec![""; probabilities.len()];
        }
        let ranked = top_k(&probabilities, &labels, TOP_K).map_err(|e| failed(cx, &e))?;
        Ok(format_ranked(&ranked).into_bytes())
    }
}

/// One executor's instance of a model function.
struct ModelFunction {
    model: Arc<str>,
    /// The manifest hash of the loaded model, and the model.
    loaded: Option<(u64, Model)>,
}

impl ModelFunction {
    /// The model as stored now, loading it if it is new to this instance.
    fn current(&mut self, cx: &Context<'_>) -> Result<&mut Model, FnError> {
        let name = &*self.model;
        let manifest = match cx.get(&manifest_key(name))? {
            Some(Value::Lww(l)) => Manifest::decode(l.value())
                .map_err(|e| cx.fail(format!("model {name:?}: {e}; upload it again")))?,
            Some(_) => {
                return Err(cx.fail(format!("model {name:?}: its manifest is not an LWW value")))
            }
            None => {
                return Err(cx.fail(format!(
                    "model {name:?} is not stored (upload it with `squall model put {name} FILE`)"
                )))
            }
        };
        if self.loaded.as_ref().map(|(h, _)| *h) != Some(manifest.hash) {
            self.loaded = None; // the old model's memory goes before the new one loads
            let started = Instant::now();
            let bytes = fetch(cx, name, &manifest)?;
            let model = Model::load(&bytes).map_err(|e| cx.fail(format!("model {name:?}: {e}")))?;
            log::info!(
                "executor {}: loaded model {name:?} ({} bytes, {:016x}) in {} ms",
                cx.get_id(),
                bytes.len(),
                manifest.hash,
                started.elapsed().as_millis()
            );
            self.loaded = Some((manifest.hash, model));
        }
        match &mut self.loaded {
            Some((_, model)) => Ok(model),
            None => Err(cx.fail("model not loaded")),
        }
    }
}

/// Assembles a model's chunks and checks them against the manifest.
fn fetch(cx: &Context<'_>, name: &str, manifest: &Manifest) -> Result<Vec<u8>, FnError> {
    let keys: Vec<Vec<u8>> = (0..manifest.chunks())
        .map(|i| chunk_key(name, manifest.hash, i))
        .collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let mut bytes = Vec::with_capacity(usize::try_from(manifest.model_bytes).unwrap_or(0));
    for (i, value) in cx.get_many(&refs)?.into_iter().enumerate() {
        match value {
            Some(Value::Lww(l)) => bytes.extend_from_slice(l.value()),
            _ => {
                return Err(cx.fail(format!(
                    "model {name:?}: chunk {i} of {} is missing; upload the model again",
                    manifest.chunks()
                )))
            }
        }
    }
    if bytes.len() as u64 != manifest.model_bytes
        || xxhash_rust::xxh64::xxh64(&bytes, 0) != manifest.hash
    {
        return Err(cx.fail(format!(
            "model {name:?}: the stored chunks do not match the manifest; upload the model again"
        )));
    }
    Ok(bytes)
}

impl Function for ModelFunction {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let input = one_arg(cx, args, "the input tensor")?;
        let model = self.current(cx)?;
        model.run(input).map_err(|e| failed(cx, &e))
    }
}
