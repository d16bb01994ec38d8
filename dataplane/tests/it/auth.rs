//! Authenticated access (`--auth-token-file`): challenge–response, roles,
//! replays, rate limits, and secrets kept out of logs.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use client::{Client, ClientOptions};
use wire::auth::Secret;
use wire::frame::encode_frame;
use wire::message::{
    Arg, Authenticate, ChainDone, ChainOutcome, DagCall, DagDef, DagName, ErrorBody, FnCall,
    FunctionBody, FunctionDef, FunctionName, Hello, KvDelete, KvGet, KvPut, Request, Response,
};
use wire::Status;

use crate::bad_input::{closed, error_code, raw, read_response};
use crate::harness::{cli, lww, rt, temp_dir, Node};

const READ: &str = "read-secret-0123456789";
const WRITE: &str = "write-secret-0123456789";
const ADMIN: &str = "admin-secret-0123456789";

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!("# roles\nread {READ}\nwrite {WRITE}\nadmin {ADMIN}\n"),
    )
    .unwrap();
    path
}

fn start(name: &str, env: &[(&str, &str)]) -> (Node, PathBuf) {
    let dir = temp_dir(name);
    let tokens = token_file(&dir);
    let node = Node::try_start_env(
        2,
        "never",
        &dir.join("data"),
        &["--auth-token-file", tokens.to_str().unwrap()],
        env,
    )
    .unwrap();
    (node, dir)
}

async fn connect_as(addr: &str, secret: Option<&str>) -> Result<Client, client::ClientError> {
    let opts = ClientOptions {
        timeout: Duration::from_secs(10),
        client_name: "it-auth".into(),
        token: secret.map(|s| Secret::new(s).unwrap()),
        ..ClientOptions::default()
    };
    Client::connect(addr, opts).await
}

fn send(s: &mut TcpStream, id: u64, req: &Request) {
    let mut buf = Vec::new();
    encode_frame(id, req, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
}

fn hello_req() -> Request {
    Request::Hello(Hello {
        protocol_version: wire::PROTOCOL_VERSION,
        client_name: b"raw".to_vec(),
    })
}

/// Sends Hello; returns the challenge's nonce.
fn challenged(s: &mut TcpStream) -> Vec<u8> {
    send(s, 1, &hello_req());
    match read_response(s) {
        Some((1, Response::Challenge(c))) => c.nonce,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// One request of every kind a client can make after the handshake.
fn every_request() -> Vec<Request> {
    let text = |s: &str| s.as_bytes().to_vec();
    vec![
        Request::Ping,
        Request::Get(KvGet {
            keys: vec![text("k")],
        }),
        Request::Put(KvPut {
            key: text("k"),
            value: lww("v"),
        }),
        Request::Delete(KvDelete { key: text("k") }),
        Request::Stats,
        Request::Call(FnCall {
            function: text("increment"),
            args: vec![Arg::Value(text("1"))],
            timeout_ms: 0,
        }),
        Request::ListFunctions,
        Request::RegisterDag(DagDef::new("d", &["increment"], &[])),
        Request::CallDag(DagCall::new("d", vec![])),
        Request::DeleteDag(DagName { name: text("d") }),
        Request::ListDags,
        Request::RegisterFunction(FunctionDef {
            name: text("f"),
            body: FunctionBody::Builtin(text("increment")),
        }),
        Request::DeleteFunction(FunctionName { name: text("f") }),
    ]
}

#[test]
fn every_request_is_refused_before_authentication() {
    let (node, _dir) = start("auth-refused", &[]);
    for req in every_request() {
        // Before Hello, and after Hello with the challenge unanswered.
        for answer_hello in [false, true] {
            let mut s = raw(node.addr());
            if answer_hello {
                challenged(&mut s);
            }
            send(&mut s, 7, &req);
            let (id, resp) = read_response(&mut s).expect("a reply");
            assert_eq!(
                (id, error_code(&resp)),
                (7, Some(Status::Unauthenticated.code())),
                "{req:?} (after Hello: {answer_hello}) got {resp:?}"
            );
            assert!(closed(&mut s), "{req:?}: the connection stayed open");
        }
    }
    // And through the client without a token: a clear error.
    rt().block_on(async {
        let err = connect_as(node.addr(), None).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::Unauthenticated), "{err}");
        assert!(err.to_string().contains("SQUALL_TOKEN"), "{err}");
    });
}

#[test]
fn roles_limit_what_a_connection_may_do() {
    let (node, _dir) = start("auth-roles", &[]);
    rt().block_on(async {
        let mut admin = connect_as(node.addr(), Some(ADMIN)).await.unwrap();
        admin.put(b"k", lww("v")).await.unwrap();
        admin
            .register_dag(DagDef::new("inc", &["increment"], &[]))
            .await
            .unwrap();

        let mut reader = connect_as(node.addr(), Some(READ)).await.unwrap();
        assert!(reader.get(b"k").await.unwrap().is_some());
        reader.ping(0).await.unwrap();
        let err = reader.put(b"k", lww("x")).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::Forbidden), "{err}");
        assert!(err.to_string().contains("needs the write role"), "{err}");
        let err = reader.delete(b"k").await.unwrap_err();
        assert_eq!(err.status(), Some(Status::Forbidden), "{err}");
        let err = reader
            .call_function("increment", vec![b"1".to_vec()], 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::Forbidden), "{err}");

        let mut writer = connect_as(node.addr(), Some(WRITE)).await.unwrap();
        writer.put(b"k", lww("w")).await.unwrap();
        let out = writer
            .call_function("increment", vec![b"1".to_vec()], 0)
            .await
            .unwrap();
        assert_eq!(out, b"2");
        for err in [
            writer
                .register_dag(DagDef::new("x", &["increment"], &[]))
                .await
                .unwrap_err(),
            writer
                .register_function("f", "increment")
                .await
                .unwrap_err(),
            writer.delete_dag("inc").await.unwrap_err(),
            // Registry keys are code: writing them directly needs admin too.
            writer.put(b"squall:fn:sneaky", lww("x")).await.unwrap_err(),
            writer
                .put(b"squall:dag:sneaky", lww("x"))
                .await
                .unwrap_err(),
            // A forged commit record would stand for another's atomic call.
            writer
                .put(b"squall:txn:0000000000000001:0", lww("x"))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(err.status(), Some(Status::Forbidden), "{err}");
            assert!(err.to_string().contains("needs the admin role"), "{err}");
        }
    });
}

#[test]
fn a_replayed_handshake_fails_and_wrong_secrets_are_rate_limited() {
    let (node, _dir) = start("auth-replay", &[]);
    let secret = Secret::new(WRITE).unwrap();
    // A good exchange on one connection...
    let mut first = raw(node.addr());
    let nonce = challenged(&mut first);
    let client_nonce = vec![9u8; 32];
    let answer = Request::Authenticate(Authenticate {
        proof: secret.client_proof(&nonce, &client_nonce),
        client_nonce,
    });
    send(&mut first, 2, &answer);
    match read_response(&mut first) {
        Some((2, Response::Welcome(w))) => assert_eq!(w.role, 2),
        other => panic!("expected Welcome, got {other:?}"),
    }
    // A one-way message the role does not allow is dropped, not answered:
    // the next reply is the next request's.
    let done = Request::ChainDone(ChainDone {
        token: 1,
        outcome: ChainOutcome::Failed(ErrorBody {
            code: Status::Internal.code(),
            message: b"forged".to_vec(),
        }),
    });
    send(&mut first, 3, &done);
    send(&mut first, 4, &Request::Ping);
    match read_response(&mut first) {
        Some((4, Response::Pong)) => {}
        other => panic!("expected the ping's Pong, got {other:?}"),
    }
    // ...replayed on another, which got another challenge.
    let mut replay = raw(node.addr());
    challenged(&mut replay);
    send(&mut replay, 2, &answer);
    let (_, resp) = read_response(&mut replay).expect("a reply");
    assert_eq!(error_code(&resp), Some(Status::Unauthenticated.code()));
    assert!(closed(&mut replay));

    // Wrong secrets: refused, then the source is locked out for a while,
    // even with the right secret.
    rt().block_on(async {
        for _ in 0..9 {
            let err = connect_as(node.addr(), Some("not-the-secret-at-all"))
                .await
                .unwrap_err();
            assert_eq!(err.status(), Some(Status::Unauthenticated), "{err}");
        }
        let err = connect_as(node.addr(), Some(ADMIN)).await.unwrap_err();
        assert!(err.to_string().contains("too many failed"), "{err}");
    });
}

#[test]
fn the_cli_authenticates_and_secrets_stay_out_of_logs() {
    let (node, dir) = start("auth-cli", &[("RUST_LOG", "debug")]);
    let addr = node.addr().to_owned();
    let client_token = dir.join("client-token");
    std::fs::write(&client_token, format!("{ADMIN}\n")).unwrap();
    let token_arg = client_token.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--addr", &addr]);
        cli(&all)
    };
    let (code, _, err) = run(&["kv", "put", "greeting", "hi", "--token-file", token_arg]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["kv", "get", "greeting", "--token-file", token_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hi"), "{out}");
    let (code, _, err) = run(&["kv", "get", "greeting"]);
    assert_ne!(code, 0);
    assert!(err.contains("unauthenticated"), "{err}");
    let wrong = dir.join("wrong-token");
    std::fs::write(&wrong, "wrong-secret-0123456789\n").unwrap();
    let (code, _, err) = run(&[
        "kv",
        "get",
        "greeting",
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(!err.contains("wrong-secret-0123456789"), "{err}");
    let logs = node.stderr();
    assert!(logs.contains("failed authentication"), "{logs}");
    for secret in [READ, WRITE, ADMIN, "wrong-secret-0123456789"] {
        assert!(!logs.contains(secret), "a secret is in the node's log");
    }
}

/// Code and model keys change only through registration, commit records
/// only through atomic calls: not through a call's output key, nor a
/// function's store, whatever the role.
#[test]
fn code_keys_cannot_be_written_around_registration() {
    let (node, _dir) = start("auth-code-keys", &[]);
    rt().block_on(async {
        let mut admin = connect_as(node.addr(), Some(ADMIN)).await.unwrap();
        admin
            .register_dag(DagDef::new("echo1", &["echo"], &[]))
            .await
            .unwrap();
        let mut writer = connect_as(node.addr(), Some(WRITE)).await.unwrap();
        let mut call = DagCall::new("echo1", crate::harness::arg("echo", "x"));
        call.output_key = b"squall:fn:planted".to_vec();
        let err = writer.call_dag_to_key(call).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
        let err = writer
            .call_function("incr_key", vec![b"squall:dag:planted".to_vec()], 0)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("may not write"), "{err}");
        assert!(admin.get(b"squall:dag:planted").await.unwrap().is_none());
        let record = b"squall:txn:0000000000000002:0";
        let err = writer
            .call_function("incr_key", vec![record.to_vec()], 0)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("may not write"), "{err}");
        assert!(admin.get(record).await.unwrap().is_none());
    });
}

/// A client holding a secret refuses a node that does not ask for it: such
/// a node cannot prove it is the one the secret is for.
#[test]
fn a_client_with_a_token_refuses_an_open_node() {
    let dir = temp_dir("auth-open");
    let node = Node::start(1, "never", &dir);
    rt().block_on(async {
        let err = connect_as(node.addr(), Some(ADMIN)).await.unwrap_err();
        assert!(err.to_string().contains("cannot prove the secret"), "{err}");
        connect_as(node.addr(), None).await.unwrap();
    });
}

/// Every request type, with each role: refused with `forbidden` exactly
/// where the role table says (read: reads only; write: no registration).
#[test]
fn every_request_type_is_refused_with_a_role_below_it() {
    let (node, _dir) = start("auth-every-role", &[]);
    let reads_only = |r: &Request| {
        matches!(
            r,
            Request::Ping
                | Request::Get(_)
                | Request::Stats
                | Request::ListFunctions
                | Request::ListDags
        )
    };
    let registration = |r: &Request| {
        matches!(
            r,
            Request::RegisterDag(_)
                | Request::DeleteDag(_)
                | Request::RegisterFunction(_)
                | Request::DeleteFunction(_)
        )
    };
    rt().block_on(async {
        for (secret, allowed) in [
            (READ, &reads_only as &dyn Fn(&Request) -> bool),
            (WRITE, &|r: &Request| !registration(r)),
        ] {
            let mut c = connect_as(node.addr(), Some(secret)).await.unwrap();
            for req in every_request() {
                let forbidden = match c.call(0, req.clone()).await {
                    Err(e) => e.status() == Some(Status::Forbidden),
                    Ok(_) => false,
                };
                assert_eq!(forbidden, !allowed(&req), "{secret}: {req:?}");
            }
        }
    });
}
