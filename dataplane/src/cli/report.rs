//! How the CLI reports a failed command: the error, and a hint naming the
//! command that fixes it where there is one.
//!
//! * Text: `squall: error: …` and then `hint: …` on stderr.
//! * `--json`: one object on stdout, `{"error": {"status", "code",
//!   "message", "hint"}}`: `status` is the node's status name and `code` its
//!   number when the node refused the request; otherwise `code` is null and
//!   `status` says what failed in the CLI: `io` (the connection),
//!   `client_timeout`, `protocol`, `unknown_status`, `invalid` (refused by
//!   the client before sending), `usage` (bad command line), `cli` (anything
//!   else: a file, a flag's value). `hint` is null when there is none.
//!
//! The exit status is the same either way: 2.

use client::ClientError;
use serde_json::json;
use wire::Status;

use super::output::{note, write_stdout};
use super::{Command, Conn, DagCommand, FnCommand, KvCommand, ModelCommand, ADDR_DEFAULT};

/// The exit status of a failed command.
pub const EXIT_ERROR: u8 = 2;

/// Reports `err` of `cmd` (text on stderr, or JSON on stdout).
pub fn report(cmd: &Command, err: &anyhow::Error) {
    let hint = hint(cmd, err);
    if cmd.conn().is_some_and(|c| c.json) {
        let (status, code) = status_of(err);
        print_json_error(status, code, &format!("{err:#}"), hint.as_deref());
    } else {
        note(&format!("squall: error: {err:#}"));
        if let Some(h) = hint {
            note(&format!("hint: {h}"));
        }
    }
}

/// Writes `{"error": …}` on stdout (a closed stdout is ignored).
pub fn print_json_error(status: &str, code: Option<u16>, message: &str, hint: Option<&str>) {
    let obj = json!({"error": {"status": status, "code": code, "message": message, "hint": hint}});
    let _ = write_stdout(format!("{obj}\n").as_bytes());
}

fn client_error(err: &anyhow::Error) -> Option<&ClientError> {
    err.chain().find_map(|e| e.downcast_ref::<ClientError>())
}

/// The `status` and `code` of the JSON error.
fn status_of(err: &anyhow::Error) -> (&'static str, Option<u16>) {
    match client_error(err) {
        Some(ClientError::Server { status, .. }) => (status.name(), Some(status.code())),
        Some(ClientError::UnknownStatus { code, .. }) => ("unknown_status", Some(*code)),
        Some(ClientError::Io { .. }) => ("io", None),
        Some(ClientError::Timeout { .. }) => ("client_timeout", None),
        Some(ClientError::Protocol { .. }) => ("protocol", None),
        Some(ClientError::Invalid(_)) => ("invalid", None),
        None => ("cli", None),
    }
}

/// The string in `message` after `prefix`, up to the next `"` (the names
/// the node quotes with `{:?}`).
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let start = message.find(prefix)? + prefix.len();
    let rest = &message[start..];
    Some(&rest[..rest.find('"')?])
}

/// ` --addr ADDR` when the command did not use the default address, so a
/// hinted command can be pasted as it is.
fn addr_flag(conn: &Conn) -> String {
    if conn.addr == ADDR_DEFAULT {
        String::new()
    } else {
        format!(" --addr {}", conn.addr)
    }
}

/// What to do about `err`, if the CLI knows.
fn hint(cmd: &Command, err: &anyhow::Error) -> Option<String> {
    let conn = cmd.conn()?;
    let addr = addr_flag(conn);
    let client = client_error(err);
    let (status, message) = match client {
        Some(ClientError::Server { status, message }) => (Some(*status), message.as_str()),
        _ => (None, ""),
    };
    // Whatever the command: no node, a slow node, a missing model.
    match client {
        Some(ClientError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            return Some(format!(
                "no node is listening at {}: start one with `squall node`, or point --addr at one",
                conn.addr
            ));
        }
        Some(ClientError::Timeout { timeout, .. }) => {
            return Some(format!(
                "the node did not answer within --client-timeout-ms ({} ms); raise it for slow \
                 commands",
                timeout.as_millis()
            ));
        }
        _ => {}
    }
    if status == Some(Status::Unauthenticated) {
        return Some(
            "the node wants a secret: pass --token-file FILE, or set SQUALL_TOKEN".to_owned(),
        );
    }
    if status == Some(Status::FunctionFailed) {
        if let Some(model) = quoted_after(message, "model \"").filter(|_| {
            message.contains("is not stored") || message.contains("upload the model again")
        }) {
            return Some(format!(
                "store the model with `squall model put {model} MODEL.onnx --labels LABELS{addr}`"
            ));
        }
    }
    let unknown_dag = || quoted_after(message, "no DAG named \"");
    let unknown_fn = || quoted_after(message, "no function named \"");
    match cmd {
        Command::Predict { dag, model, .. } if status == Some(Status::UnknownDag) => {
            let mut flags = String::new();
            if dag != "predict" {
                flags.push_str(&format!(" --dag {dag}"));
            }
            if model != "squeezenet" {
                flags.push_str(&format!(" --model {model}"));
            }
            Some(format!(
                "register the prediction pipeline first: `squall model pipeline{flags}{addr}` \
                 (after `squall model put {model} MODEL.onnx --labels LABELS{addr}` if the model \
                 is not stored yet)"
            ))
        }
        Command::Predict { .. } | Command::Dag { .. } | Command::Fn { .. }
            if status == Some(Status::Timeout) =>
        {
            Some("the run took longer than its deadline: raise --call-timeout-ms".into())
        }
        Command::Dag { .. } if status == Some(Status::Conflict) => Some(
            "other atomic calls kept rewriting what this one read; it wrote nothing: call it \
             again (with the same --txn: it still takes effect once)"
                .into(),
        ),
        Command::Dag {
            command: DagCommand::Call { name, .. },
        } if status == Some(Status::UnknownDag) => {
            let missing = unknown_dag().unwrap_or(name.as_str());
            let create = if missing == "predict" {
                format!("`squall model pipeline{addr}` registers the prediction DAG")
            } else {
                format!(
                    "`squall dag create {missing} --function F [--function G --edge F:G]{addr}` \
                     registers it"
                )
            };
            Some(format!(
                "`squall dag list{addr}` shows the registered DAGs; {create}"
            ))
        }
        Command::Dag {
            command: DagCommand::Create { .. },
        } if status == Some(Status::InvalidDag) && message.contains("is not registered") => {
            let f = quoted_after(message, "function \"").unwrap_or("F");
            Some(format!(
                "`squall fn list{addr}` shows the registered functions; `squall fn register {f} \
                 MODULE.wasm{addr}` (or `--builtin B`, `--model M`) registers one"
            ))
        }
        Command::Dag { .. } | Command::Fn { .. } if status == Some(Status::UnknownFunction) => {
            if let Command::Fn {
                command: FnCommand::Register { .. },
            } = cmd
            {
                return Some(format!(
                    "--builtin takes the name of a built-in function; `squall fn list{addr}` \
                     shows them"
                ));
            }
            let f = unknown_fn().unwrap_or("F");
            Some(format!(
                "`squall fn list{addr}` shows the registered functions; `squall fn register {f} \
                 MODULE.wasm{addr}` (or `--builtin B`, `--model M`) registers one"
            ))
        }
        Command::Fn {
            command: FnCommand::Register {
                model: Some(model), ..
            },
        } if matches!(client, Some(ClientError::Invalid(m)) if m.contains("no model named")) => {
            Some(format!(
                "store the model first: `squall model put {model} MODEL.onnx --labels \
                 LABELS{addr}` (it also registers function {model})"
            ))
        }
        Command::Kv {
            command: KvCommand::Put { key, .. },
        } if status == Some(Status::TypeMismatch) => Some(format!(
            "{key:?} holds another lattice type: `squall kv get {key} --json{addr}` shows which; \
             `squall kv del {key}{addr}` frees the key"
        )),
        Command::Model {
            command: ModelCommand::Pipeline { model, .. },
        } if status == Some(Status::InvalidDag) && message.contains("is not registered") => {
            Some(format!(
                "store the model first: `squall model put {model} MODEL.onnx --labels LABELS{addr}`"
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_names_come_out_of_node_messages() {
        let m = "no DAG named \"predict\" is registered";
        assert_eq!(quoted_after(m, "no DAG named \""), Some("predict"));
        assert_eq!(quoted_after(m, "no function named \""), None);
        assert_eq!(quoted_after("no DAG named \"x", "no DAG named \""), None);
    }
}
