//! The `squall` CLI against a running node: a closed stdout, hints that
//! name the command to run, binary values in and out, errors as JSON.

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{cli, cli_ok, temp_dir, Node, SQUALL};

/// Runs the CLI with `stdin` on its standard input; (exit code, stdout
/// bytes, stderr).
fn run_bytes(args: &[&OsStr], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(SQUALL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `run_bytes` with text arguments and `--addr addr`.
fn run_at(addr: &str, args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.extend([OsStr::new("--addr"), OsStr::new(addr)]);
    run_bytes(&all, stdin)
}

/// The CLI's exit code and stderr when its stdout's reader goes away:
/// after reading `read_first` bytes of it (0: the pipe is closed before the
/// CLI writes anything).
fn with_closed_stdout(addr: &str, args: &[&str], read_first: usize) -> (i32, String) {
    let mut child = Command::new(SQUALL)
        .args(args)
        .args(["--addr", addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    if read_first > 0 {
        let mut first = vec![0; read_first];
        stdout.read_exact(&mut first).unwrap();
    }
    drop(stdout); // like `| head -c N`: the reader exits
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The single line starting with `hint: ` in `stderr`.
fn hint_line(stderr: &str) -> &str {
    let hints: Vec<&str> = stderr.lines().filter(|l| l.starts_with("hint: ")).collect();
    assert_eq!(hints.len(), 1, "one hint line expected in:\n{stderr}");
    hints[0]
}

/// An address where nothing listens.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly_instead_of_panicking() {
    let dir = temp_dir("cli-epipe");
    let node = Node::start(1, "never", &dir);
    let addr = node.addr().to_owned();
    // Larger than a pipe's buffer: the CLI is still writing when the reader goes.
    let big = "x".repeat(512 << 10);
    let file = write(&dir, "big", big.as_bytes());
    cli_ok(&addr, &["kv", "put", "big", "--file", &file]);
    cli_ok(&addr, &["kv", "put", "small", "hello"]);
    // An argument may be at most 128 KiB (Linux), still more than a pipe holds.
    let arg = "y".repeat(100 << 10);
    let cases: [(&[&str], usize); 8] = [
        (&["kv", "get", "big"], 1),
        (&["kv", "get", "big", "--raw"], 1),
        (&["kv", "get", "big", "--json"], 1),
        (&["kv", "get", "big"], 0),
        (&["kv", "get", "small"], 0),
        (&["kv", "stats"], 0),
        (&["fn", "list", "--json"], 0),
        (&["fn", "call", "echo", &arg, "--raw"], 1),
    ];
    for (args, read_first) in cases {
        let (code, err) = with_closed_stdout(&addr, args, read_first);
        let shown = &args[..args.len().min(3)];
        assert!(!err.contains("panicked"), "{shown:?}: {err}");
        assert_eq!(code, 0, "{shown:?} (101 is a panic): {err}");
        assert!(err.trim().is_empty(), "{shown:?} said: {err}");
    }
    // The same through a shell pipeline, as a user types it.
    let (err_file, code_file) = (dir.join("pipe.err"), dir.join("pipe.code"));
    let script = format!(
        "{{ {SQUALL} kv get big --addr {addr} 2>{}; echo $? >{}; }} | head -c 1 >/dev/null",
        err_file.display(),
        code_file.display(),
    );
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(status.success());
    let err = std::fs::read_to_string(&err_file).unwrap();
    let code = std::fs::read_to_string(&code_file).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code.trim(), "0", "`squall kv get big | head -c 1`: {err}");
}

#[test]
fn errors_name_the_command_that_fixes_them() {
    let dir = temp_dir("cli-hints");
    let node = Node::start(2, "never", &dir);
    let addr = node.addr().to_owned();
    let image = write(&dir, "kitten.png", b"not really a png");

    // `squall predict` before `squall model pipeline`.
    let (code, _, err) = cli(&["predict", &image, "--addr", &addr]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown_dag (16)"), "{err}");
    let hint = hint_line(&err);
    assert!(
        hint.contains("`squall model pipeline --addr ") && hint.contains("squall model put"),
        "{hint}"
    );
    let (_, _, err) = cli(&["predict", &image, "--dag", "p2", "--addr", &addr]);
    assert!(
        hint_line(&err).contains("squall model pipeline --dag p2"),
        "{err}"
    );

    // An unknown DAG, and an unknown continuation.
    let (code, _, err) = cli(&["dag", "call", "nope", "--addr", &addr]);
    assert_eq!(code, 2);
    let hint = hint_line(&err);
    assert!(
        hint.contains("squall dag list") && hint.contains("squall dag create nope"),
        "{hint}"
    );
    cli_ok(&addr, &["dag", "create", "inc", "--function", "increment"]);
    let (_, _, err) = cli(&[
        "dag",
        "call",
        "inc",
        "--arg",
        "increment=1",
        "--then",
        "later",
        "--addr",
        &addr,
    ]);
    assert!(err.contains("unknown_dag"), "{err}");
    assert!(hint_line(&err).contains("squall dag create later"), "{err}");

    // A DAG over a function that does not exist.
    let (_, _, err) = cli(&["dag", "create", "d", "--function", "nofn", "--addr", &addr]);
    assert!(err.contains("invalid_dag"), "{err}");
    let hint = hint_line(&err);
    assert!(
        hint.contains("squall fn list") && hint.contains("squall fn register nofn"),
        "{hint}"
    );

    // An unknown function; an unknown built-in.
    let (code, _, err) = cli(&["fn", "call", "nofn", "1", "--addr", &addr]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown_function (15)"), "{err}");
    let hint = hint_line(&err);
    assert!(
        hint.contains("squall fn list") && hint.contains("squall fn register nofn"),
        "{hint}"
    );
    let (_, _, err) = cli(&["fn", "register", "f", "--builtin", "nope", "--addr", &addr]);
    assert!(hint_line(&err).contains("squall fn list"), "{err}");

    // A model function without its model.
    let (_, _, err) = cli(&["fn", "register", "m", "--model", "absent", "--addr", &addr]);
    assert!(
        hint_line(&err).contains("squall model put absent MODEL.onnx"),
        "{err}"
    );
    let model = write(&dir, "m.onnx", b"not really onnx");
    let labels = write(&dir, "labels.txt", b"0,zero\n");
    let (code, out, err) = run_at(
        &addr,
        &["model", "put", "mymodel", &model, "--labels", &labels],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).starts_with("OK: model mymodel"));
    assert!(
        hint_line(&err).contains("squall model pipeline --model mymodel"),
        "model put offers the pipeline: {err}"
    );
    cli_ok(&addr, &["kv", "del", "squall:model:mymodel"]);
    let (_, _, err) = cli(&["fn", "call", "mymodel", "x", "--addr", &addr]);
    assert!(err.contains("function_failed"), "{err}");
    assert!(
        hint_line(&err).contains("squall model put mymodel MODEL.onnx"),
        "{err}"
    );

    // A put of another lattice type.
    cli_ok(&addr, &["kv", "put", "hits", "3", "--lattice", "max"]);
    let (_, _, err) = cli(&["kv", "put", "hits", "x", "--addr", &addr]);
    assert!(err.contains("type_mismatch (8)"), "{err}");
    assert!(hint_line(&err).contains("squall kv del hits"), "{err}");

    // No node there.
    let dead = dead_addr();
    let (code, _, err) = cli(&["kv", "get", "k", "--addr", &dead]);
    assert_eq!(code, 2);
    assert!(hint_line(&err).contains("squall node"), "{err}");

    // A command that succeeds says no hint.
    let (_, _, err) = cli(&["kv", "get", "hits", "--addr", &addr]);
    assert!(!err.contains("hint:"), "{err}");
}

#[test]
fn binary_values_go_in_from_files_stdin_and_arguments_and_come_out_exactly() {
    let dir = temp_dir("cli-binary");
    let node = Node::start(2, "never", &dir);
    let addr = node.addr().to_owned();
    let all_bytes: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
    let file = write(&dir, "bin", &all_bytes);

    // --file PATH, then --raw: every byte back, no newline added.
    cli_ok(&addr, &["kv", "put", "bin", "--file", &file]);
    let (code, out, err) = run_at(&addr, &["kv", "get", "bin", "--raw"], b"");
    assert_eq!((code, out.len()), (0, all_bytes.len()), "{err}");
    assert_eq!(out, all_bytes);

    // --file - reads stdin.
    let (code, _, err) = run_at(
        &addr,
        &["kv", "put", "in", "--file", "-"],
        &all_bytes[..300],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run_at(&addr, &["kv", "get", "in", "--raw"], b"");
    assert_eq!(out, &all_bytes[..300]);

    // A non-UTF-8 argument is taken as it is.
    let mut args: Vec<&OsStr> = ["kv", "put", "arg"].map(OsStr::new).to_vec();
    args.extend([
        OsStr::from_bytes(&[0xff, 0xfe, b'a']),
        OsStr::new("--addr"),
        OsStr::new(&addr),
    ]);
    let (code, _, err) = run_bytes(&args, b"");
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run_at(&addr, &["kv", "get", "arg", "--raw"], b"");
    assert_eq!(out, [0xff, 0xfe, b'a']);

    // JSON: base64 with "encoding" for bytes that are not UTF-8 …
    let tiny = write(&dir, "tiny", &[0xff, 0xfe, 0x00, b'a']);
    cli_ok(&addr, &["kv", "put", "tiny", "--file", &tiny]);
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&addr, &["kv", "get", "tiny", "--json"])).unwrap();
    assert_eq!(json["value"], "//4AYQ==", "{json}");
    assert_eq!(json["encoding"], "base64");
    assert_eq!(json["lattice"], "lww");
    // … and the text itself for UTF-8, as before, now saying so.
    cli_ok(&addr, &["kv", "put", "greeting", "héllo"]);
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&addr, &["kv", "get", "greeting", "--json"])).unwrap();
    assert_eq!(
        (&json["value"], &json["encoding"]),
        (&"héllo".into(), &"utf8".into())
    );
    // Text mode still shows something, and says how to get the bytes.
    let (code, out, err) = run_at(&addr, &["kv", "get", "tiny"], b"");
    assert_eq!(code, 0);
    assert!(String::from_utf8(out).unwrap().contains('\u{FFFD}'));
    assert!(hint_line(&err).contains("--raw"), "{err}");

    // Sets: one encoding for all members; --raw refuses them.
    cli_ok(
        &addr,
        &["kv", "put", "s", "--file", &tiny, "--lattice", "set"],
    );
    cli_ok(&addr, &["kv", "put", "s", "plain", "--lattice", "set"]);
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&addr, &["kv", "get", "s", "--json"])).unwrap();
    assert_eq!(json["encoding"], "base64", "{json}");
    let mut members: Vec<&str> = json["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["//4AYQ==", "cGxhaW4="]);
    let (code, out, err) = run_at(&addr, &["kv", "get", "s", "--raw"], b"");
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("--json"), "{err}");
    // A max value from a file (a trailing newline is fine).
    let n = write(&dir, "n", b"42\n");
    cli_ok(&addr, &["kv", "put", "m", "--file", &n, "--lattice", "max"]);
    assert_eq!(cli_ok(&addr, &["kv", "get", "m"]).trim(), "42");

    // Not found with --raw: nothing on stdout, exit status 1.
    let (code, out, err) = run_at(&addr, &["kv", "get", "absent", "--raw"], b"");
    assert_eq!((code, out.len()), (1, 0));
    assert!(err.contains("(not found)"), "{err}");

    // Function results: --raw and the JSON encoding.
    let mut args: Vec<&OsStr> = ["fn", "call", "echo"].map(OsStr::new).to_vec();
    args.extend([
        OsStr::from_bytes(&[0xff, 0xfe]), // (an argument cannot hold a NUL)
        OsStr::new("--raw"),
        OsStr::new("--addr"),
        OsStr::new(&addr),
    ]);
    let (code, out, err) = run_bytes(&args, b"");
    assert_eq!((code, out), (0, vec![0xff, 0xfe]), "{err}");
    args[4] = OsStr::new("--json");
    let (_, out, _) = run_bytes(&args, b"");
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (&json["result"], &json["encoding"]),
        (&"//4=".into(), &"base64".into())
    );

    // A VALUE and --file together are refused.
    let (code, _, err) = cli(&["kv", "put", "k", "v", "--file", &file, "--addr", &addr]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn with_json_errors_are_json_too() {
    let dir = temp_dir("cli-json-errors");
    let node = Node::start(1, "never", &dir);
    let addr = node.addr().to_owned();
    let parse = |out: &[u8]| -> serde_json::Value {
        serde_json::from_slice(out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
    };

    let (code, out, err) = run_at(&addr, &["dag", "call", "nope", "--json"], b"");
    assert_eq!(code, 2, "the exit status stays");
    assert!(!err.contains("squall: error"), "{err}");
    let e = &parse(&out)["error"];
    assert_eq!(
        (&e["status"], &e["code"]),
        (&"unknown_dag".into(), &16.into()),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("\"nope\""), "{e}");
    assert!(
        e["hint"]
            .as_str()
            .unwrap()
            .contains("squall dag create nope"),
        "{e}"
    );

    // An error without a hint: hint is null.
    let (code, out, _) = run_at(&addr, &["fn", "call", "increment", "x", "--json"], b"");
    assert_eq!(code, 2);
    let e = &parse(&out)["error"];
    assert_eq!(
        (&e["status"], &e["code"]),
        (&"function_failed".into(), &14.into()),
        "{e}"
    );
    assert!(e["hint"].is_null(), "{e}");

    // Errors of the CLI itself: no node, a missing file, a bad command line.
    let dead = dead_addr();
    let (code, out, _) = run_at(&dead, &["kv", "get", "k", "--json"], b"");
    assert_eq!(code, 2);
    let e = &parse(&out)["error"];
    assert_eq!(
        (&e["status"], &e["code"]),
        (&"io".into(), &serde_json::Value::Null),
        "{e}"
    );
    assert!(e["hint"].as_str().unwrap().contains("squall node"), "{e}");

    let (code, out, _) = run_at(
        &addr,
        &["kv", "put", "k", "--file", "/nonexistent/x", "--json"],
        b"",
    );
    assert_eq!(code, 2);
    let e = &parse(&out)["error"];
    assert_eq!(e["status"], "cli", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("/nonexistent/x"),
        "{e}"
    );

    let (code, out, _) = run_at(&addr, &["kv", "put", "--json"], b"");
    assert_eq!(code, 2);
    assert_eq!(parse(&out)["error"]["status"], "usage");

    // Success is unchanged: one object, exit status 0.
    let (code, out, _) = run_at(&addr, &["kv", "get", "k", "--json"], b"");
    assert_eq!(code, 0);
    assert_eq!(parse(&out)["found"], false);
}
