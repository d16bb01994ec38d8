//! The prediction pipeline's DAG and calls, shared by the CLI, the load
//! generator and the tests.
//!
//! ```text
//! preprocess ──► MODEL#1 ──┐
//!            ├─► MODEL#2 ──┼─► average ──► top5 ◄── echo#labels (ref: squall:labels:MODEL)
//!            └─► MODEL#3 ──┘
//! ```
//! `MODEL#i` are uses of the one model function `MODEL` (one node each);
//! the scheduler puts parallel branches on different executors. `top5`
//! takes the labels first, then the averaged probabilities.

use wire::message::{Arg, DagCall, DagDef, SourceArgs};

/// The DAG node that reads the model's labels.
pub const LABELS_NODE: &str = "echo#labels";

/// Most replicas `prediction_dag` builds (one DAG node each).
pub const REPLICAS_MAX: u32 = 16;

/// DAG `name`: `preprocess` → `replicas` parallel uses of model function
/// `model` → `average` → `top5` with the model's labels.
#[must_use]
pub fn prediction_dag(name: &str, model: &str, replicas: u32) -> DagDef {
    let replicas: Vec<String> = (1..=replicas.clamp(1, REPLICAS_MAX))
        .map(|i| format!("{model}#{i}"))
        .collect();
    let mut functions: Vec<&str> = vec!["preprocess"];
    functions.extend(replicas.iter().map(String::as_str));
    functions.extend([LABELS_NODE, "average", "top5"]);
    let mut edges: Vec<(&str, &str)> = Vec::new();
    for r in &replicas {
        edges.push(("preprocess", r));
        edges.push((r, "average"));
    }
    // Fan-in order is function-list order: labels before the average.
    edges.push((LABELS_NODE, "top5"));
    edges.push(("average", "top5"));
    DagDef::new(name, &functions, &edges)
}

/// A call of a [`prediction_dag`] on one encoded image (PNG or JPEG).
#[must_use]
pub fn prediction_call(name: &str, model: &str, image: Vec<u8>, timeout_ms: u32) -> DagCall {
    let mut call = DagCall::new(
        name,
        vec![
            SourceArgs {
                function: b"preprocess".to_vec(),
                args: vec![Arg::Value(image)],
            },
            SourceArgs {
                function: LABELS_NODE.as_bytes().to_vec(),
                args: vec![Arg::Ref(wire::model::labels_key(model))],
            },
        ],
    );
    call.timeout_ms = timeout_ms;
    call
}
