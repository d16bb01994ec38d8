//! The in-thread cost of a function call and of the composition DAG
//! `square(increment(x))`: the floor under any placement of functions.

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use executor::dag::{Dag, DagSpec};
use executor::registry::{Executor, Registry};
use executor::run::Arg;
use executor::store::LocalStore;

fn functions(c: &mut Criterion) {
    let reg = Arc::new(Registry::with_builtins());
    let mut ex = Executor::new(1, reg.clone());
    let store = LocalStore::default();
    let arg = vec![b"41".to_vec()];
    c.bench_function("functions/call_increment", |b| {
        b.iter(|| ex.call("increment", &store, &arg).expect("call"))
    });
    let dag = Arc::new(
        Dag::validate(&DagSpec::chain("compose", &["increment", "square"]), |f| {
            reg.contains(f)
        })
        .expect("dag"),
    );
    let args: HashMap<String, Vec<Arg>> =
        [("increment".to_owned(), vec![Arg::Value(b"41".to_vec())])].into();
    c.bench_function("functions/dag_square_of_increment", |b| {
        b.iter(|| ex.run_dag(&dag, &store, args.clone()).expect("dag run"))
    });
}

criterion_group!(benches, functions);
criterion_main!(benches);
