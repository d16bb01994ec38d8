//! Uses every host call once and reports what it saw, one `name=value` per
//! line: the SDK's and the node's API tested end to end. Argument: a key
//! prefix for its scratch keys.
use squall_guest::{
    delete, export, get, get_id, log, put, recv, send, text_arg, Delivery, Error, Level, Value,
};

fn kitchen(args: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let p = text_arg(args, 0)?;
    let key = |s: &str| format!("{p}{s}").into_bytes();
    let mut out = Vec::new();
    let me = get_id();
    out.push(format!("id={me}"));
    put(&key("lww"), &Value::Lww(b"v1".to_vec()));
    put(&key("set"), &Value::Set(vec![b"a".to_vec(), b"b".to_vec()]));
    put(&key("set"), &Value::Set(vec![b"c".to_vec()]));
    put(&key("max"), &Value::Max(3));
    put(&key("max"), &Value::Max(2));
    put(&key("prio"), &Value::Priority(5, b"five".to_vec()));
    put(&key("prio"), &Value::Priority(1, b"one".to_vec()));
    match get(&key("lww")) {
        Some(Value::Lww(v)) => out.push(format!("lww={}", String::from_utf8_lossy(&v))),
        other => return Err(Error::failed(format!("lww read back as {other:?}"))),
    }
    match get(&key("set")) {
        Some(Value::Set(items)) => out.push(format!("set={}", items.len())),
        other => return Err(Error::failed(format!("set read back as {other:?}"))),
    }
    match get(&key("max")) {
        Some(Value::Max(n)) => out.push(format!("max={n}")),
        other => return Err(Error::failed(format!("max read back as {other:?}"))),
    }
    match get(&key("prio")) {
        Some(Value::Priority(n, v)) => {
            out.push(format!("prio={n}:{}", String::from_utf8_lossy(&v)))
        }
        other => return Err(Error::failed(format!("prio read back as {other:?}"))),
    }
    out.push(format!("deleted={}", delete(&key("lww"))));
    out.push(format!("after_delete={}", get(&key("lww")).is_none()));
    out.push(format!("missing={}", get(&key("never")).is_none()));
    // To itself: straight into its own mailbox, then received.
    let d = send(me, b"hello self");
    out.push(format!(
        "send={}",
        if d == Delivery::Direct {
            "direct"
        } else {
            "inbox"
        }
    ));
    let got = recv();
    out.push(format!(
        "recv={}",
        got.iter()
            .map(|m| format!("{}:{}", m.from, String::from_utf8_lossy(&m.bytes)))
            .collect::<Vec<_>>()
            .join(",")
    ));
    log(Level::Info, "kitchen: every host call answered");
    Ok(out.join("\n").into_bytes())
}

export!(kitchen);
