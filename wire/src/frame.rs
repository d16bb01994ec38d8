//! Framing: every message travels as
//!
//! ```text
//! frame = body_len:u32le request_id:u64le epoch:u64le body[body_len]
//! ```
//!
//! `body` is the rkyv archive of one [`Request`] or [`Response`]. The
//! request id is chosen by the client and echoed in the response, so a
//! client may pipeline any number of requests (up to the node's queue
//! limits) and match replies by id. `epoch` is the sender's cluster epoch
//! (version 5): in a request, the epoch of the view the client routed by
//! (0: it does not route); in a response, the answering node's epoch, so a
//! changed topology reaches a client on its next reply.

use rkyv::rancor;
use thiserror::Error;

use crate::limits::FRAME_BODY_BYTES_MAX;
use crate::message::{ArchivedRequest, ArchivedResponse, ErrorBody, Request, Response};
use crate::status::Status;

/// Bytes before every body.
pub const FRAME_HEADER_BYTES: usize = 20;

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub body_len: usize,
    pub request_id: u64,
    /// The sender's cluster epoch (see the module doc).
    pub epoch: u64,
}

/// Bytes that are not a valid frame or message.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame body is not a valid message: {0}")]
    Invalid(String),
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

impl FrameError {
    /// The status an error response for this carries.
    #[must_use]
    pub fn status(&self) -> Status {
        match self {
            FrameError::TooLarge { .. } => Status::FrameTooLarge,
            FrameError::Invalid(_) => Status::BadFrame,
            FrameError::Encode(_) => Status::Internal,
        }
    }
}

impl FrameHeader {
    /// Parses the header at the start of `buf`: `Ok(None)` if fewer than
    /// [`FRAME_HEADER_BYTES`] are there yet.
    pub fn parse(buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
        FrameHeader::parse_with_limit(buf, FRAME_BODY_BYTES_MAX)
    }

    /// As [`FrameHeader::parse`], with a custom body limit.
    pub fn parse_with_limit(buf: &[u8], max: usize) -> Result<Option<FrameHeader>, FrameError> {
        let Some(h) = buf.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let body_len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if body_len > max {
            return Err(FrameError::TooLarge { len: body_len, max });
        }
        Ok(Some(FrameHeader {
            body_len,
            request_id: u64_at(4),
            epoch: u64_at(12),
        }))
    }

    /// Total bytes of the frame.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.body_len
    }
}

/// Appends one frame holding `msg` to `out`, with epoch 0 (see
/// [`encode_frame_epoch`]).
pub fn encode_frame<T>(request_id: u64, msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            Vec<u8>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    encode_frame_epoch(request_id, 0, msg, out)
}

/// Appends one frame holding `msg` to `out`, its header carrying `epoch`.
///
/// Encoding into a `Vec` only fails if the archive outgrows rkyv's 32-bit
/// offsets (far above every frame limit); if it ever does, `out` is left
/// empty.
pub fn encode_frame_epoch<T>(
    request_id: u64,
    epoch: u64,
    msg: &T,
    out: &mut Vec<u8>,
) -> Result<(), FrameError>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            Vec<u8>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    // The serializer takes its writer by value: lend it the buffer and take
    // it back (no copy). rkyv's relative pointers are position differences,
    // so the bytes already in front of the body do not matter.
    match rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, std::mem::take(out)) {
        Ok(buf) => *out = buf,
        Err(e) => return Err(FrameError::Encode(e.to_string())),
    }
    let body_len = out.len() - start - FRAME_HEADER_BYTES;
    let Ok(len) = u32::try_from(body_len) else {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len: body_len,
            max: FRAME_BODY_BYTES_MAX,
        });
    };
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 12].copy_from_slice(&request_id.to_le_bytes());
    out[start + 12..start + 20].copy_from_slice(&epoch.to_le_bytes());
    Ok(())
}

/// Appends an error response frame (epoch 0).
pub fn encode_error(request_id: u64, status: Status, message: &str, out: &mut Vec<u8>) {
    encode_error_epoch(request_id, 0, status, message, out);
}

/// Appends an error response frame whose header carries `epoch`.
pub fn encode_error_epoch(
    request_id: u64,
    epoch: u64,
    status: Status,
    message: &str,
    out: &mut Vec<u8>,
) {
    let body = Response::Error(ErrorBody {
        code: status.code(),
        message: message.as_bytes().to_vec(),
    });
    // An error body is a code and a short string: encoding cannot fail.
    encode_frame_epoch(request_id, epoch, &body, out).expect("error responses always encode");
}

/// Validates a request body and returns a zero-copy view of it.
pub fn decode_request(body: &[u8]) -> Result<&ArchivedRequest, FrameError> {
    rkyv::access::<ArchivedRequest, rancor::BoxedError>(body)
        .map_err(|e| FrameError::Invalid(e.to_string()))
}

/// Validates a response body and returns a zero-copy view of it.
pub fn decode_response(body: &[u8]) -> Result<&ArchivedResponse, FrameError> {
    rkyv::access::<ArchivedResponse, rancor::BoxedError>(body)
        .map_err(|e| FrameError::Invalid(e.to_string()))
}

/// Validates and deserialises a response into owned form.
pub fn decode_response_owned(body: &[u8]) -> Result<Response, FrameError> {
    rkyv::from_bytes::<Response, rancor::BoxedError>(body)
        .map_err(|e| FrameError::Invalid(e.to_string()))
}

/// Validates and deserialises a request into owned form.
pub fn decode_request_owned(body: &[u8]) -> Result<Request, FrameError> {
    rkyv::from_bytes::<Request, rancor::BoxedError>(body)
        .map_err(|e| FrameError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;
    use proptest::prelude::*;

    fn frame_of(msg: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame_epoch(42, 0x0102_0304_0506_0708, msg, &mut out).unwrap();
        out
    }

    fn body(frame: &[u8]) -> &[u8] {
        &frame[FRAME_HEADER_BYTES..]
    }

    #[test]
    fn requests_round_trip_and_bodies_need_no_alignment() {
        let msgs = [
            Request::Hello(Hello {
                protocol_version: 1,
                client_name: b"t".to_vec(),
            }),
            Request::Ping,
            Request::Get(KvGet {
                keys: vec![b"a".to_vec(), b"bb".to_vec()],
            }),
            Request::Put(KvPut {
                key: b"k".to_vec(),
                value: Value::MultiKeyCausal(vec![CausalVersion {
                    clock: vec![ClockEntry {
                        node: 1,
                        counter: 2,
                    }],
                    deps: vec![Dependency {
                        key: b"d".to_vec(),
                        clock: vec![],
                    }],
                    bytes: b"v".to_vec(),
                }]),
            }),
            Request::Delete(KvDelete { key: b"k".to_vec() }),
            Request::Stats,
        ];
        for m in msgs {
            let f = frame_of(&m);
            let h = FrameHeader::parse(&f).unwrap().unwrap();
            assert_eq!((h.request_id, h.frame_len()), (42, f.len()));
            assert_eq!(h.epoch, 0x0102_0304_0506_0708);
            assert_eq!(decode_request_owned(body(&f)).unwrap(), m);
            // Shift the body by one byte: still readable in place.
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(body(&f));
            assert!(decode_request(&shifted[1..]).is_ok());
        }
    }

    #[test]
    fn oversized_length_prefix_is_refused() {
        let mut f = frame_of(&Request::Ping);
        f[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            FrameHeader::parse(&f),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(FrameHeader::parse(&f[..5]), Ok(None));
        assert_eq!(FrameHeader::parse(&f[..FRAME_HEADER_BYTES - 1]), Ok(None));
    }

    #[test]
    fn a_response_is_not_a_request() {
        let mut out = Vec::new();
        encode_error(1, Status::Timeout, "slow", &mut out);
        let r = decode_response_owned(body(&out)).unwrap();
        assert_eq!(
            r,
            Response::Error(ErrorBody {
                code: 12,
                message: b"slow".to_vec()
            })
        );
    }

    fn i32_at(b: &[u8], at: usize) -> i32 {
        i32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
    }

    /// The layout order the protocol document states is enforced: the
    /// out-of-line data of a later field may not come before an earlier
    /// field's. Padding is not checked.
    #[test]
    fn layout_order_is_enforced_and_padding_is_not() {
        let put = Request::Put(KvPut {
            key: b"k".to_vec(),
            value: Value::Lww(LwwValue {
                timestamp: 0,
                writer: 0,
                bytes: b"v".to_vec(),
            }),
        });
        let f = frame_of(&put);
        let mut b = body(&f).to_vec();
        // "k" at 0, "v" at 1, then the root: tag, key Vec at 3, value at
        // 11 (tag, timestamp, writer, bytes Vec at 28).
        assert_eq!(&b[..2], b"kv");
        let (key_vec, bytes_vec) = (3, 28);
        assert_eq!(key_vec as i32 + i32_at(&b, key_vec), 0);
        assert_eq!(bytes_vec as i32 + i32_at(&b, bytes_vec), 1);
        assert!(decode_request(&b).is_ok());
        // The same values, the later field's bytes first: refused.
        b.swap(0, 1);
        let key_off = i32_at(&b, key_vec) + 1;
        let bytes_off = i32_at(&b, bytes_vec) - 1;
        b[key_vec..key_vec + 4].copy_from_slice(&key_off.to_le_bytes());
        b[bytes_vec..bytes_vec + 4].copy_from_slice(&bytes_off.to_le_bytes());
        let err = decode_request(&b).unwrap_err().to_string();
        assert!(!err.contains("debug assertions"), "{err}");
        assert!(
            err.contains("subtree"),
            "the sentence should say what is wrong: {err}"
        );

        // Bytes after a smaller enum variant are padding: not checked.
        let f = frame_of(&Request::Ping);
        let mut b = body(&f).to_vec();
        b[1] = 0xaa;
        assert!(matches!(decode_request(&b), Ok(ArchivedRequest::Ping)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// The decoder is total: arbitrary bytes give a request or an error,
        /// never a panic or an out-of-bounds read.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
            let _ = FrameHeader::parse(&bytes);
        }

        /// Corrupting one byte of a valid body yields an error or a valid
        /// request, never a panic.
        #[test]
        fn mutated_valid_bodies_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let f = frame_of(&Request::Get(KvGet { keys: vec![b"abc".to_vec(), vec![0; 9]] }));
            let mut b = body(&f).to_vec();
            let i = pos.index(b.len());
            b[i] = byte;
            let _ = decode_request(&b);
        }
    }
}
