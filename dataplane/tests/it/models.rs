//! The prediction pipeline on a running node, with the real SqueezeNet
//! weights in `../shared/models`: model upload, the DAG, `squall predict`,
//! and the errors for bad images, tensors and models.

use std::collections::BTreeSet;

use wire::Status;

use crate::harness::{cli, cli_ok, connect, rt, temp_dir, Node};

/// The path of a reference file (`models::reference_dir`).
fn shared(file: &str) -> String {
    models::reference_dir().join(file).display().to_string()
}

fn start(dir: &std::path::Path) -> Node {
    Node::try_start(1, "batch", dir, &["--executors-per-shard", "3"]).unwrap()
}

fn start_with_model(dir: &std::path::Path) -> Node {
    let node = start(dir);
    let out = cli_ok(
        node.addr(),
        &[
            "model",
            "put",
            "squeezenet",
            &shared("squeezenet1.1_fp32.onnx"),
            "--labels",
            &shared("imagenet_labels.txt"),
        ],
    );
    assert!(
        out.starts_with("OK: model squeezenet (4955097 bytes)"),
        "{out}"
    );
    assert_eq!(cli_ok(node.addr(), &["model", "pipeline"]).trim(), "OK");
    node
}

/// `squall predict --json IMAGE` → the best class, its probability, label.
fn predict(addr: &str, image: &str) -> (u64, f64, String) {
    let out = cli_ok(addr, &["predict", &shared(image), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let top = &v["top5"];
    assert_eq!(top.as_array().map(Vec::len), Some(5), "{out}");
    (
        top[0]["class"].as_u64().unwrap(),
        top[0]["probability"].as_f64().unwrap(),
        top[0]["label"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn the_pipeline_classifies_the_reference_images_with_three_replicas_on_three_executors() {
    let dir = temp_dir("predict");
    let mut node = start_with_model(&dir);
    let addr = node.addr().to_owned();
    let (class, p, label) = predict(&addr, "kitten_224.png");
    assert_eq!((class, label.as_str()), (281, "tabby, tabby cat"));
    assert!((p - 0.93).abs() <= 0.01, "kitten p = {p}");
    let (class, p, label) = predict(&addr, "fish.png");
    assert_eq!((class, label.as_str()), (0, "tench, Tinca tinca"));
    assert!((p - 0.74).abs() <= 0.01, "fish p = {p}");
    // The plain output: five `class<TAB>p<TAB>label` lines, best first.
    let text = cli_ok(&addr, &["predict", &shared("kitten_224.png")]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("281\t0.93"), "{text}");
    // Each replica loaded the model on its own executor, once: three
    // distinct executors, and no second load for the later calls.
    let loads: Vec<String> = node
        .stderr()
        .lines()
        .filter(|l| l.contains("loaded model \"squeezenet\""))
        .map(str::to_owned)
        .collect();
    let executors: BTreeSet<&str> = loads
        .iter()
        .filter_map(|l| l.split("executor ").nth(1)?.split(':').next())
        .collect();
    assert_eq!((loads.len(), executors.len()), (3, 3), "{loads:#?}");

    // The same through the client library, and after a restart (the model
    // and the DAG are KVS data).
    let image = models::reference_file("fish.png");
    let call = || client::pipeline::prediction_call("predict", "squeezenet", image.clone(), 0);
    let best_class = |addr: String| {
        rt().block_on(async {
            let mut c = connect(&addr).await;
            let out = c.call_dag_with(call()).await.unwrap();
            let text = String::from_utf8(out).unwrap();
            models::tensor::parse_ranked(&text).unwrap()[0].0
        })
    };
    assert_eq!(best_class(addr), 0);
    assert!(node.signal_and_wait("TERM").success());
    let node = start(&dir);
    assert_eq!(best_class(node.addr().to_owned()), 0);
}

#[test]
fn bad_images_tensors_and_models_give_clear_errors() {
    let node = start_with_model(&temp_dir("predict-errors"));
    let addr = node.addr().to_owned();
    let fail = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--addr", &addr]);
        let (code, _, err) = cli(&all);
        assert_ne!(code, 0, "squall {args:?} should fail");
        err
    };
    // A corrupt image: a PNG cut in half, and bytes that are no image.
    let png = models::reference_file("kitten_224.png");
    let cut = temp_dir("cut").join("cut.png");
    std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
    let err = fail(&["predict", cut.to_str().unwrap()]);
    assert!(
        err.contains(
            "function_failed (14): function preprocess: not a decodable PNG or JPEG image"
        ),
        "{err}"
    );
    let err = fail(&["predict", &shared("imagenet_labels.txt")]);
    assert!(err.contains("neither PNG nor JPEG"), "{err}");
    // A tensor of the wrong size, straight to the model function.
    let err = fail(&["fn", "call", "squeezenet", "abc"]);
    assert!(
        err.contains("function squeezenet: the input tensor must be 602112 bytes ([1, 3, 224, 224] f32), not 3"),
        "{err}"
    );
    // A model that does not exist: refused at registration...
    let err = fail(&["fn", "register", "resnet", "--model", "resnet"]);
    assert!(err.contains("no model named \"resnet\" is stored"), "{err}");
    let err = fail(&["model", "put", "x", "/nonexistent.onnx"]);
    assert!(err.contains("reading /nonexistent.onnx"), "{err}");
    let err = fail(&["model", "pipeline", "--dag", "p2", "--model", "nolabels"]);
    assert!(err.contains("has no labels stored"), "{err}");
    rt().block_on(async {
        let mut c = connect(&addr).await;
        // ...and at call, when its bytes went away after registration.
        c.register_model_function("sq2", "squeezenet").await.unwrap();
        assert!(c.delete(&wire::model::manifest_key("squeezenet")).await.unwrap());
        let tensor = vec![0u8; 602_112];
        let e = c.call_function("sq2", vec![tensor.clone()], 0).await.unwrap_err();
        assert_eq!(e.status(), Some(Status::FunctionFailed));
        assert!(
            e.to_string().contains(
                "function sq2: model \"squeezenet\" is not stored (upload it with `squall model put squeezenet FILE`)"
            ),
            "{e}"
        );
        // Bytes that are not ONNX are stored, and refused at first use; a
        // new put replaces them and executors load the new model.
        c.put_model("squeezenet", b"not an onnx file", None).await.unwrap();
        let e = c.call_function("sq2", vec![tensor.clone()], 0).await.unwrap_err();
        assert!(e.to_string().contains("not a usable ONNX model"), "{e}");
        let onnx = models::reference_file("squeezenet1.1_fp32.onnx");
        c.put_model("squeezenet", &onnx, None).await.unwrap();
        let out = c.call_function("sq2", vec![tensor], 0).await.unwrap();
        assert_eq!(out.len(), 4000, "1000 f32 probabilities");
    });
}

#[test]
fn loadgen_squeezenet_quick_mode_reports_the_pipeline_beside_both_floors() {
    let node = start(&temp_dir("loadgen-squeezenet"));
    let models_dir = models::reference_dir();
    let report = crate::harness::loadgen_report(&[
        "squeezenet",
        "--quick",
        "--json",
        "--addr",
        node.addr(),
        "--models-dir",
        models_dir.to_str().unwrap(),
    ]);
    for key in [
        "p50_us",
        "p99_us",
        "sequential_p50_us",
        "parallel_p50_us",
        "model_p50_us",
    ] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    assert!(
        report["top1"].as_str().unwrap().starts_with("281\t0.93"),
        "{report}"
    );
    assert_eq!(report["calls"].as_u64(), Some(6));
}
