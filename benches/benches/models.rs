//! The prediction pipeline's pieces, without a node: image preprocessing,
//! one SqueezeNet 1.1 inference with tract (the number to compare with
//! `scripts/onnxruntime-reference.sh`), averaging and top-5.
//!
//! `cargo bench -p benches --bench models`

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use models::image_input::preprocess;
use models::onnx::Model;
use models::tensor::{average, from_bytes, parse_labels, top_k};

use models::reference_file as shared;

fn pipeline_pieces(c: &mut Criterion) {
    let image = shared("kitten_224.png");
    let onnx = shared("squeezenet1.1_fp32.onnx");
    let labels = String::from_utf8(shared("imagenet_labels.txt")).unwrap();
    let mut g = c.benchmark_group("squeezenet");
    g.sample_size(20);
    g.bench_function("load_and_optimise", |b| {
        b.iter(|| Model::load(&onnx).unwrap())
    });
    g.bench_function("preprocess_png_224", |b| {
        b.iter(|| preprocess(&image).unwrap())
    });
    let mut model = Model::load(&onnx).unwrap();
    let tensor = preprocess(&image).unwrap();
    g.bench_function("inference_tract", |b| {
        b.iter(|| model.run(&tensor).unwrap())
    });
    let out = model.run(&tensor).unwrap();
    g.bench_function("average_of_3", |b| {
        b.iter(|| average(&[&out, &out, &out]).unwrap())
    });
    g.bench_function("labels_and_top5", |b| {
        b.iter(|| {
            let l = parse_labels(&labels).unwrap();
            top_k(&from_bytes(&out).unwrap(), &l, 5).unwrap().len()
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline_pieces);
criterion_main!(benches);
