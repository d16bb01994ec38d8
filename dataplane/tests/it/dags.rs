//! DAGs through the node: registration checks, composition, fan-in order,
//! state, restart, deletion.

use wire::message::DagDef;
use wire::Status;

use crate::harness::{arg, cli_ok, connect, rt, temp_dir, Node};

fn def(name: &str, functions: &[&str], edges: &[(&str, &str)]) -> DagDef {
    DagDef::new(name, functions, edges)
}

fn compose_again() -> DagDef {
    def(
        "compose",
        &["increment", "square"],
        &[("increment", "square")],
    )
}

#[test]
fn dags_compose_validate_survive_restart_and_delete() {
    let dir = temp_dir("dags");
    let node = Node::start(2, "always", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let compose = def(
            "compose",
            &["increment", "square"],
            &[("increment", "square")],
        );
        c.register_dag(compose.clone()).await.unwrap();
        assert_eq!(
            c.call_dag("compose", arg("increment", "41"), 0)
                .await
                .unwrap(),
            b"1764"
        );
        // Re-registering replaces it (the owner's cached copy is dropped).
        c.register_dag(def(
            "compose",
            &["square", "increment"],
            &[("square", "increment")],
        ))
        .await
        .unwrap();
        assert_eq!(
            c.call_dag("compose", arg("square", "41"), 0).await.unwrap(),
            b"1682"
        );
        c.register_dag(compose).await.unwrap();
        assert_eq!(
            c.call_dag("compose", arg("increment", "41"), 0)
                .await
                .unwrap(),
            b"1764"
        );
        // A naive client (any shard) gets the same answer, forwarded or not.
        for shard in 0..2u16 {
            let req = wire::message::Request::CallDag(wire::message::DagCall::new(
                "compose",
                arg("increment", "2"),
            ));
            assert_eq!(
                c.call(shard, req).await.unwrap(),
                wire::message::Response::Output(b"9".to_vec())
            );
        }
        // Both shards now hold a copy; re-registering makes both stale.
        let flipped = def(
            "compose",
            &["square", "increment"],
            &[("square", "increment")],
        );
        c.register_dag(flipped).await.unwrap();
        for shard in 0..2u16 {
            let req = wire::message::Request::CallDag(wire::message::DagCall::new(
                "compose",
                arg("square", "2"),
            ));
            assert_eq!(
                c.call(shard, req).await.unwrap(),
                wire::message::Response::Output(b"5".to_vec()),
                "shard {shard} sees the new DAG"
            );
        }
        c.register_dag(compose_again()).await.unwrap();

        // Fan-out and fan-in; echo as the sink shows the argument order
        // (square's result, then increment's: the DAG's list order).
        let diamond = def(
            "diamond",
            &["echo", "square", "increment", "sum"],
            &[
                ("echo", "square"),
                ("echo", "increment"),
                ("square", "sum"),
                ("increment", "sum"),
            ],
        );
        c.register_dag(diamond).await.unwrap();
        assert_eq!(
            c.call_dag("diamond", arg("echo", "3"), 0).await.unwrap(),
            b"13"
        );
        let edges = [
            ("sum", "square"),
            ("sum", "increment"),
            ("square", "echo"),
            ("increment", "echo"),
        ];
        c.register_dag(def(
            "sq-first",
            &["sum", "square", "increment", "echo"],
            &edges,
        ))
        .await
        .unwrap();
        c.register_dag(def(
            "inc-first",
            &["sum", "increment", "square", "echo"],
            &edges,
        ))
        .await
        .unwrap();
        assert_eq!(
            c.call_dag("sq-first", arg("sum", "3"), 0).await.unwrap(),
            b"94"
        );
        assert_eq!(
            c.call_dag("inc-first", arg("sum", "3"), 0).await.unwrap(),
            b"49",
            "list order, not edge order"
        );
        c.delete_dag("sq-first").await.unwrap();
        c.delete_dag("inc-first").await.unwrap();

        let two_sinks = def(
            "order",
            &["echo", "square", "increment", "sum"],
            &[("echo", "square"), ("echo", "increment")],
        );
        let err = c.register_dag(two_sinks).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidDag));
        assert!(err.to_string().contains("exactly one sink"), "{err}");

        // Refusals name the problem.
        let err = c
            .register_dag(def(
                "cyc",
                &["increment", "square"],
                &[("increment", "square"), ("square", "increment")],
            ))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cycle"), "{err}");
        let err = c
            .register_dag(def("unk", &["nope"], &[]))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("\"nope\" is not registered"),
            "{err}"
        );

        // State written by one function is visible to the next call.
        c.register_dag(def("hits", &["incr_key"], &[]))
            .await
            .unwrap();
        assert_eq!(
            c.call_dag("hits", arg("incr_key", "h"), 0).await.unwrap(),
            b"1"
        );
        assert_eq!(
            c.call_dag("hits", arg("incr_key", "h"), 0).await.unwrap(),
            b"2"
        );

        // Arguments for a function that is not a source are refused.
        let err = c
            .call_dag("compose", arg("square", "2"), 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
        assert_eq!(c.list_dags().await.unwrap(), ["compose", "diamond", "hits"]);
    });
    drop(node);
    let node = Node::start(2, "always", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        assert_eq!(
            c.call_dag("compose", arg("increment", "1"), 0)
                .await
                .unwrap(),
            b"4",
            "DAGs survive restart"
        );
        assert!(c.delete_dag("compose").await.unwrap());
        let err = c
            .call_dag("compose", arg("increment", "1"), 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::UnknownDag));
        assert_eq!(c.list_dags().await.unwrap(), ["diamond", "hits"]);
    });
    // The CLI drives the same requests.
    let addr = node.addr().to_owned();
    cli_ok(
        &addr,
        &[
            "dag",
            "create",
            "c2",
            "--function",
            "increment",
            "--function",
            "square",
            "--edge",
            "increment:square",
        ],
    );
    assert_eq!(
        cli_ok(&addr, &["dag", "call", "c2", "--arg", "increment=9"]).trim(),
        "100"
    );
    assert!(cli_ok(&addr, &["dag", "list"]).lines().any(|l| l == "c2"));
    assert_eq!(cli_ok(&addr, &["dag", "delete", "c2"]).trim(), "deleted");
}
