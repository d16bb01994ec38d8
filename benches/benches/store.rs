//! Partition and lattice operations, WAL record encoding.

use std::collections::BTreeSet;

use benches::{key, lww};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kvs_core::lattice::Value;
use kvs_core::partition::{Mutation, Partition};
use kvs_core::wal::encode_record;
use kvs_core::Lsn;

fn partition(c: &mut Criterion) {
    let mut p = Partition::default();
    for i in 0..100_000 {
        p.apply(Mutation::Put {
            key: key(i),
            value: lww(1, 100),
        })
        .expect("put");
    }
    let mut i = 0u64;
    c.bench_function("partition/get_hit_100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            std::hint::black_box(p.get(&key(i)).is_some())
        })
    });
    let mut clock = 2;
    c.bench_function("partition/put_lww_merge_100B", |b| {
        b.iter_batched(
            || {
                clock += 1;
                i = (i + 7919) % 100_000;
                Mutation::Put {
                    key: key(i),
                    value: lww(clock, 100),
                }
            },
            |m| p.apply(m).expect("put"),
            BatchSize::SmallInput,
        )
    });
}

fn lattices(c: &mut Criterion) {
    let set = |n: u64| {
        Value::Set(
            (0..n)
                .map(|i| i.to_le_bytes().to_vec())
                .collect::<BTreeSet<_>>(),
        )
    };
    c.bench_function("lattice/set_union_64_into_1024", |b| {
        b.iter_batched(
            || (set(1024), set(64)),
            |(mut a, x)| a.merge(x).expect("same kind"),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("lattice/max_merge", |b| {
        b.iter_batched(
            || (Value::Max(5), Value::Max(9)),
            |(mut a, x)| a.merge(x).expect("same kind"),
            BatchSize::SmallInput,
        )
    });
}

fn wal(c: &mut Criterion) {
    let m = Mutation::Put {
        key: key(42),
        value: lww(7, 100),
    };
    let mut out = Vec::with_capacity(1 << 20);
    c.bench_function("wal/encode_record_100B", |b| {
        b.iter(|| {
            if out.len() > (1 << 19) {
                out.clear();
            }
            encode_record(Lsn(1), &m, &mut out);
        })
    });
}

criterion_group!(benches, partition, lattices, wal);
criterion_main!(benches);
