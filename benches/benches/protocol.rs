//! Frame encoding and validated (zero-copy) decoding.

use criterion::{criterion_group, criterion_main, Criterion};
use wire::frame::{decode_request, encode_frame, FRAME_HEADER_BYTES};
use wire::message::{KvGet, KvPut, LwwValue, Request, Response, Value};

fn frames(c: &mut Criterion) {
    let get = Request::Get(KvGet {
        keys: vec![benches::key(1)],
    });
    let put = Request::Put(KvPut {
        key: benches::key(1),
        value: Value::Lww(LwwValue {
            timestamp: 0,
            writer: 0,
            bytes: vec![b'v'; 100],
        }),
    });
    let reply = Response::Values(vec![Some(Value::Lww(LwwValue {
        timestamp: 1,
        writer: 2,
        bytes: vec![b'v'; 100],
    }))]);
    let mut buf = Vec::with_capacity(4096);
    c.bench_function("wire/encode_get_request", |b| {
        b.iter(|| {
            buf.clear();
            encode_frame(1, &get, &mut buf).expect("encodes");
        })
    });
    c.bench_function("wire/encode_values_reply_100B", |b| {
        b.iter(|| {
            buf.clear();
            encode_frame(1, &reply, &mut buf).expect("encodes");
        })
    });
    for (name, req) in [("get", &get), ("put_100B", &put)] {
        let mut frame = Vec::new();
        encode_frame(1, req, &mut frame).expect("encodes");
        let body = frame[FRAME_HEADER_BYTES..].to_vec();
        c.bench_function(&format!("wire/validate_{name}_request"), |b| {
            b.iter(|| std::hint::black_box(decode_request(&body).is_ok()))
        });
    }
}

criterion_group!(benches, frames);
criterion_main!(benches);
