//! RESP2, the Redis serialization protocol, for a node's RESP listener
//! (issue #15): so that every Redis client and tool (`redis-cli`,
//! `redis-benchmark`) can read and write Squall's LWW keys. Sans-I/O: this
//! module turns bytes into commands and replies into bytes; the node maps
//! the commands onto its partitions.
//!
//! ## Requests
//! A command is an array of bulk strings — `*<n>\r\n`, then `n` times
//! `$<len>\r\n<bytes>\r\n` — or an inline command: one line of words
//! separated by spaces or tabs, ending in `\n` or `\r\n`, as a person
//! typing at `telnet` sends (no quoting). [`parse`] reads one command from
//! the front of a buffer into the caller's argument list, as ranges of the
//! buffer, so a connection that keeps its list allocates nothing per
//! command. It answers the command's length, or `None` (wait for more
//! bytes), or a protocol error after which the stream cannot be trusted:
//! the reply is `-ERR Protocol error: …` and the connection closes, as
//! Redis does. An empty command (`*0`, an empty line) is skipped.
//!
//! ## Limits
//! - arguments per command: [`RESP_ARGS_MAX`] (an `MSET` of 1024 pairs);
//! - one command, all told: [`RESP_COMMAND_BYTES_MAX`], so a connection
//!   never buffers more (a value over the store's own limit is refused by
//!   the node, with its error, not here);
//! - an inline command: [`RESP_INLINE_BYTES_MAX`]; a `*` or `$` header
//!   line: 32 bytes.
//!
//! ## Commands
//! [`Command::from_args`] names the subset served (LWW keys), with Redis's
//! errors for a wrong number of arguments or an unknown command: `GET`,
//! `SET` (no options), `DEL`, `EXISTS`, `MGET`, `MSET`, `PING`, `ECHO`,
//! `INFO`, `COMMAND` (an empty list), `CONFIG GET`, `SELECT 0`,
//! `AUTH`, `QUIT`.
//!
//! ## Replies
//! [`reply`]: simple strings, errors (`-ERR …`), integers, bulk strings
//! (`$-1` for none) and array headers.

use std::ops::Range;

use crate::limits::FRAME_BODY_BYTES_MAX;

/// Arguments in one command: the name and up to 1024 key–value pairs.
pub const RESP_ARGS_MAX: usize = 1 + 2 * 1024;

/// Bytes of one command (every header and argument): the native
/// protocol's frame limit.
pub const RESP_COMMAND_BYTES_MAX: usize = FRAME_BODY_BYTES_MAX;

/// Bytes of an inline command's line.
pub const RESP_INLINE_BYTES_MAX: usize = 64 << 10;

/// Bytes of a `*<n>` or `$<len>` line's number.
const HEADER_DIGITS_MAX: usize = 32;

/// Why the bytes are not RESP; after one, the connection closes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("Protocol error: a bulk string does not end in CRLF")]
    ExpectedCrlf,
    #[error("Protocol error: a command of more than {RESP_COMMAND_BYTES_MAX} bytes")]
    CommandTooLarge,
    #[error("Protocol error: too big inline request (more than {RESP_INLINE_BYTES_MAX} bytes)")]
    InlineTooLarge,
}

/// Reads one command from the front of `buf` into `args` (ranges of
/// `buf`, the command's name first): `Some(length)` once complete, `None`
/// while more bytes are needed. `args` is empty for an empty command.
pub fn parse(buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<usize>, RespError> {
    args.clear();
    match buf.first() {
        None => Ok(None),
        Some(b'*') => multibulk(buf, args),
        Some(_) => inline(buf, args),
    }
}

/// The number on the line starting at `from` (after a `*` or `$`), and
/// where the next line starts; `None` while the line is incomplete.
fn header(buf: &[u8], from: usize, bad: RespError) -> Result<Option<(i64, usize)>, RespError> {
    let window = &buf[from..buf.len().min(from + HEADER_DIGITS_MAX + 2)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return match window.len() > HEADER_DIGITS_MAX + 1 {
            true => Err(bad),
            false => Ok(None),
        };
    };
    let text = std::str::from_utf8(&window[..cr]).map_err(|_| bad.clone())?;
    let n = text.parse::<i64>().map_err(|_| bad)?;
    Ok(Some((n, from + cr + 2)))
}

fn multibulk(buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<usize>, RespError> {
    let Some((n, mut at)) = header(buf, 1, RespError::MultibulkLength)? else {
        return Ok(None);
    };
    if n <= 0 {
        return Ok(Some(at));
    }
    if n as u64 > RESP_ARGS_MAX as u64 {
        return Err(RespError::MultibulkLength);
    }
    for _ in 0..n {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&other) => return Err(RespError::ExpectedBulk(other)),
        }
        let Some((len, data)) = header(buf, at + 1, RespError::BulkLength)? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| RespError::BulkLength)?;
        let end = data.checked_add(len).ok_or(RespError::BulkLength)?;
        if end + 2 > RESP_COMMAND_BYTES_MAX {
            return Err(RespError::CommandTooLarge);
        }
        match buf.get(end..end + 2) {
            None => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => return Err(RespError::ExpectedCrlf),
        }
        args.push(data..end);
        at = end + 2;
    }
    Ok(Some(at))
}

fn inline(buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<usize>, RespError> {
    let window = &buf[..buf.len().min(RESP_INLINE_BYTES_MAX + 1)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return match window.len() > RESP_INLINE_BYTES_MAX {
            true => Err(RespError::InlineTooLarge),
            false => Ok(None),
        };
    };
    let line = match buf[..nl].last() {
        Some(b'\r') => nl - 1,
        _ => nl,
    };
    let mut start = None;
    for (i, &b) in buf[..line].iter().enumerate() {
        match (b == b' ' || b == b'\t', start) {
            (true, Some(s)) => {
                args.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
        if args.len() > RESP_ARGS_MAX {
            return Err(RespError::MultibulkLength);
        }
    }
    if let Some(s) = start {
        args.push(s..line);
    }
    Ok(Some(nl + 1))
}

/// A command's arguments after its name, as slices of the buffer.
#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    buf: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    #[must_use]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i` (0: the first after the command's name).
    #[must_use]
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.ranges.get(i).map(|r| &self.buf[r.clone()])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + '_ {
        self.ranges.iter().map(|r| &self.buf[r.clone()])
    }

    /// `(key, value)` pairs (`MSET`'s arguments).
    pub fn pairs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        self.ranges
            .chunks_exact(2)
            .map(|p| (&self.buf[p[0].clone()], &self.buf[p[1].clone()]))
    }
}

/// A command the RESP listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Command<'a> {
    Get(&'a [u8]),
    Set(&'a [u8], &'a [u8]),
    /// Keys to delete: the reply counts those that existed.
    Del(Args<'a>),
    /// Keys to test: the reply counts those that exist.
    Exists(Args<'a>),
    MGet(Args<'a>),
    /// Key–value pairs.
    MSet(Args<'a>),
    Ping(Option<&'a [u8]>),
    Echo(&'a [u8]),
    Info,
    /// `COMMAND` and its subcommands (`DOCS`, `COUNT`, …), which
    /// `redis-cli` sends at start: answered with an empty list.
    Command,
    /// `CONFIG GET parameter`, which `redis-benchmark` sends at start.
    ConfigGet(&'a [u8]),
    Select,
    /// `AUTH secret` (or `AUTH user secret`): the secret of a token.
    Auth(&'a [u8]),
    Quit,
}

/// Why a command is refused (the connection stays open): the sentence of
/// a RESP error reply, `ERR` first.
pub type CommandError = String;

impl<'a> Command<'a> {
    /// The command in `args` (ranges of `buf`, as [`parse`] left them).
    pub fn from_args(buf: &'a [u8], args: &'a [Range<usize>]) -> Result<Command<'a>, CommandError> {
        let Some((name, rest)) = args.split_first() else {
            return Err("ERR empty command".to_owned());
        };
        let name = &buf[name.clone()];
        let rest = Args { buf, ranges: rest };
        let arity = |ok: bool| match ok {
            true => Ok(()),
            false => Err(format!(
                "ERR wrong number of arguments for '{}' command",
                String::from_utf8_lossy(name).to_lowercase()
            )),
        };
        let n = rest.len();
        let arg = |i: usize| rest.get(i).unwrap_or_default();
        // Compared without case and without a copy: a GET allocates nothing.
        let is = |word: &str| name.eq_ignore_ascii_case(word.as_bytes());
        Ok(if is("GET") {
            arity(n == 1).map(|()| Command::Get(arg(0)))?
        } else if is("SET") {
            arity(n >= 2)?;
            if n > 2 {
                return Err("ERR SET options (EX, PX, NX, XX, GET, KEEPTTL) are not \
                            supported: Squall serves SET key value"
                    .to_owned());
            }
            Command::Set(arg(0), arg(1))
        } else if is("DEL") {
            arity(n >= 1).map(|()| Command::Del(rest))?
        } else if is("EXISTS") {
            arity(n >= 1).map(|()| Command::Exists(rest))?
        } else if is("MGET") {
            arity(n >= 1).map(|()| Command::MGet(rest))?
        } else if is("MSET") {
            arity(n >= 2 && n % 2 == 0).map(|()| Command::MSet(rest))?
        } else if is("PING") {
            arity(n <= 1).map(|()| Command::Ping(rest.get(0)))?
        } else if is("ECHO") {
            arity(n == 1).map(|()| Command::Echo(arg(0)))?
        } else if is("AUTH") {
            // `AUTH secret`, or Redis 6's `AUTH user secret` (any user).
            arity(n == 1 || n == 2).map(|()| Command::Auth(arg(n - 1)))?
        } else if is("INFO") {
            Command::Info
        } else if is("COMMAND") {
            Command::Command
        } else if is("CONFIG") {
            match rest.get(0) {
                Some(sub) if sub.eq_ignore_ascii_case(b"GET") => {
                    arity(n == 2).map(|()| Command::ConfigGet(arg(1)))?
                }
                _ => return Err("ERR Squall serves CONFIG GET only".to_owned()),
            }
        } else if is("SELECT") {
            arity(n == 1)?;
            if arg(0) != b"0" {
                return Err("ERR DB index is out of range (Squall has database 0 only)".to_owned());
            }
            Command::Select
        } else if is("QUIT") {
            Command::Quit
        } else {
            let mut msg = format!(
                "ERR unknown command '{}', with args beginning with:",
                String::from_utf8_lossy(&name[..name.len().min(64)])
            );
            for a in rest.iter().take(4) {
                msg.push_str(&format!(
                    " '{}'",
                    String::from_utf8_lossy(&a[..a.len().min(64)])
                ));
            }
            return Err(msg);
        })
    }
}

/// Encoders of RESP2 replies, appending to a send buffer.
pub mod reply {
    use std::io::Write as _;

    /// `+OK`-style status.
    pub fn simple(out: &mut Vec<u8>, s: &str) {
        out.push(b'+');
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// `-ERR …`: `msg` with any CR or LF replaced by spaces (one line).
    pub fn error(out: &mut Vec<u8>, msg: &str) {
        out.push(b'-');
        out.extend(
            msg.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }

    pub fn integer(out: &mut Vec<u8>, n: i64) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, ":{n}\r\n");
    }

    /// A bulk string, or `$-1` (nil) for `None`.
    pub fn bulk(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            None => out.extend_from_slice(b"$-1\r\n"),
            Some(b) => {
                let _ = write!(out, "${}\r\n", b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The header of an array of `n` replies (which follow).
    pub fn array(out: &mut Vec<u8>, n: usize) {
        let _ = write!(out, "*{n}\r\n");
    }
}

/// A command as a client sends it (an array of bulk strings).
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    reply::array(out, args.len());
    for a in args {
        reply::bulk(out, Some(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A parsed command: its length and its arguments.
    type Parsed = Option<(usize, Vec<Vec<u8>>)>;

    fn parsed(buf: &[u8]) -> Result<Parsed, RespError> {
        let mut args = Vec::new();
        Ok(parse(buf, &mut args)?
            .map(|n| (n, args.iter().map(|r| buf[r.clone()].to_vec()).collect())))
    }

    fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        out
    }

    #[test]
    fn a_multibulk_command_parses_once_complete_at_every_split() {
        let cmd = command(&[b"SET", b"key", b"a\r\nvalue with \0 bytes"]);
        for cut in 0..cmd.len() {
            assert_eq!(parsed(&cmd[..cut]), Ok(None), "cut at {cut}");
        }
        let (n, args) = parsed(&cmd).unwrap().unwrap();
        assert_eq!(n, cmd.len());
        assert_eq!(
            args,
            vec![
                b"SET".to_vec(),
                b"key".to_vec(),
                b"a\r\nvalue with \0 bytes".to_vec()
            ]
        );
    }

    #[test]
    fn pipelined_commands_parse_one_at_a_time() {
        let mut buf = command(&[b"GET", b"a"]);
        let first = buf.len();
        buf.extend(command(&[b"GET", b"b"]));
        buf.extend_from_slice(b"PING\r\n");
        let (n, args) = parsed(&buf).unwrap().unwrap();
        assert_eq!((n, args), (first, vec![b"GET".to_vec(), b"a".to_vec()]));
        let (m, args) = parsed(&buf[n..]).unwrap().unwrap();
        assert_eq!(args, vec![b"GET".to_vec(), b"b".to_vec()]);
        let (_, args) = parsed(&buf[n + m..]).unwrap().unwrap();
        assert_eq!(args, vec![b"PING".to_vec()]);
    }

    #[test]
    fn inline_commands_split_on_spaces_and_tabs() {
        let (n, args) = parsed(b"set  k\tv\r\nGET k\r\n").unwrap().unwrap();
        assert_eq!(n, 10);
        assert_eq!(args, vec![b"set".to_vec(), b"k".to_vec(), b"v".to_vec()]);
        assert_eq!(
            parsed(b"PING\n").unwrap().unwrap(),
            (5, vec![b"PING".to_vec()])
        );
        assert_eq!(
            parsed(b"\r\n").unwrap().unwrap(),
            (2, vec![]),
            "an empty line is skipped"
        );
        assert_eq!(parsed(b"*0\r\n").unwrap().unwrap(), (4, vec![]));
        assert_eq!(parsed(b"PIN"), Ok(None));
    }

    #[test]
    fn malformed_input_is_a_protocol_error() {
        assert_eq!(parsed(b"*x\r\n"), Err(RespError::MultibulkLength));
        assert_eq!(parsed(b"*99999\r\n"), Err(RespError::MultibulkLength));
        assert_eq!(
            parsed(b"*1\r\n+GET\r\n"),
            Err(RespError::ExpectedBulk(b'+'))
        );
        assert_eq!(parsed(b"*1\r\n$-3\r\n"), Err(RespError::BulkLength));
        assert_eq!(parsed(b"*1\r\n$3\r\nGETxx"), Err(RespError::ExpectedCrlf));
        let huge = format!("*1\r\n${}\r\n", RESP_COMMAND_BYTES_MAX);
        assert_eq!(parsed(huge.as_bytes()), Err(RespError::CommandTooLarge));
        assert_eq!(
            parsed(&[b'*'; 40]),
            Err(RespError::MultibulkLength),
            "a header line without end"
        );
        assert_eq!(
            parsed(&vec![b'a'; RESP_INLINE_BYTES_MAX + 1]),
            Err(RespError::InlineTooLarge)
        );
        assert_eq!(parsed(&vec![b'a'; RESP_INLINE_BYTES_MAX]), Ok(None));
        assert_eq!(
            RespError::ExpectedBulk(b'+').to_string(),
            "Protocol error: expected '$', got '+'"
        );
    }

    fn cmd(line: &[u8]) -> Result<String, String> {
        let mut args = Vec::new();
        parse(line, &mut args).unwrap().unwrap();
        Command::from_args(line, &args).map(|c| format!("{c:?}"))
    }

    #[test]
    fn commands_check_their_arguments_as_redis_does() {
        assert!(cmd(b"get k\n").unwrap().starts_with("Get"));
        assert!(cmd(b"SET k v\n").unwrap().starts_with("Set"));
        assert_eq!(
            cmd(b"GET\n").unwrap_err(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            cmd(b"mset a 1 b\n").unwrap_err(),
            "ERR wrong number of arguments for 'mset' command"
        );
        assert!(cmd(b"SET k v EX 10\n")
            .unwrap_err()
            .contains("not supported"));
        assert!(cmd(b"select 1\n").unwrap_err().contains("out of range"));
        assert!(cmd(b"select 0\n").is_ok());
        assert_eq!(
            cmd(b"FLUSHALL now please\n").unwrap_err(),
            "ERR unknown command 'FLUSHALL', with args beginning with: 'now' 'please'"
        );
        assert_eq!(
            cmd(b"config get save\n").unwrap(),
            "ConfigGet([115, 97, 118, 101])"
        );
        assert!(cmd(b"config set save 1\n").is_err());
        assert_eq!(
            cmd(b"AUTH s3cret\n").unwrap(),
            "Auth([115, 51, 99, 114, 101, 116])"
        );
        assert_eq!(
            cmd(b"auth default s3cret\n").unwrap(),
            "Auth([115, 51, 99, 114, 101, 116])"
        );
        assert_eq!(
            cmd(b"AUTH\n").unwrap_err(),
            "ERR wrong number of arguments for 'auth' command"
        );
        let line = b"MSET a 1 b 2\n";
        let mut args = Vec::new();
        parse(line, &mut args).unwrap();
        let Ok(Command::MSet(pairs)) = Command::from_args(line, &args) else {
            panic!()
        };
        let pairs: Vec<_> = pairs.pairs().collect();
        assert_eq!(pairs, vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"2"[..])]);
    }

    #[test]
    fn replies_are_encoded_as_redis_does() {
        let mut out = Vec::new();
        reply::simple(&mut out, "OK");
        reply::error(&mut out, "ERR two\r\nlines");
        reply::integer(&mut out, -3);
        reply::bulk(&mut out, Some(b"v"));
        reply::bulk(&mut out, None);
        reply::array(&mut out, 2);
        assert_eq!(
            out,
            b"+OK\r\n-ERR two  lines\r\n:-3\r\n$1\r\nv\r\n$-1\r\n*2\r\n"
        );
    }

    proptest! {
        #[test]
        fn any_command_round_trips(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)) {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let buf = command(&refs);
            prop_assert_eq!(parsed(&buf), Ok(Some((buf.len(), args))));
        }

        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut args = Vec::new();
            if let Ok(Some(n)) = parse(&bytes, &mut args) {
                prop_assert!(n <= bytes.len());
                prop_assert!(args.iter().all(|r| r.end <= n));
                let _ = Command::from_args(&bytes, &args);
            }
        }
    }
}
