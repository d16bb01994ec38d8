//! Checks that `docs/wire-protocol.md` matches the encoder: its inline sizes
//! and its hex examples. A failing test prints the block to paste.

use std::mem::size_of;

use crate::frame::encode_frame;

use crate::message::*;

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn frame<T>(id: u64, msg: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            Vec<u8>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let mut out = Vec::new();
    encode_frame(id, msg, &mut out).expect("encodes");
    out
}

fn examples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "Request 1: Hello { protocol_version: 9, client_name: \"py\" }",
            frame(
                1,
                &Request::Hello(Hello {
                    protocol_version: 9,
                    client_name: b"py".to_vec(),
                }),
            ),
        ),
        (
            "Request 2: Get { keys: [\"k1\"] }",
            frame(
                2,
                &Request::Get(KvGet {
                    keys: vec![b"k1".to_vec()],
                }),
            ),
        ),
        (
            "Request 3: Put { key: \"k\", value: Lww { timestamp: 0, writer: 0, bytes: \"v\" } }",
            frame(
                3,
                &Request::Put(KvPut {
                    key: b"k".to_vec(),
                    value: Value::Lww(LwwValue {
                        timestamp: 0,
                        writer: 0,
                        bytes: b"v".to_vec(),
                    }),
                }),
            ),
        ),
        ("Request 4: Ping", frame(4, &Request::Ping)),
        ("Response 4: Pong, from a node at epoch 0x1122334455667788", {
            let mut out = Vec::new();
            crate::frame::encode_frame_epoch(4, 0x1122_3344_5566_7788, &Response::Pong, &mut out)
                .expect("encodes");
            out
        }),
        (
            "Response 2: Values [Some(Lww { timestamp: 5, writer: 7, bytes: \"v\" }), None]",
            frame(
                2,
                &Response::Values(vec![
                    Some(Value::Lww(LwwValue {
                        timestamp: 5,
                        writer: 7,
                        bytes: b"v".to_vec(),
                    })),
                    None,
                ]),
            ),
        ),
        (
            "Request 5: Authenticate { client_nonce: 32 × 0x02, proof } for secret \"example-secret-0123\" and nonce 32 × 0x01",
            frame(
                5,
                &Request::Authenticate(Authenticate {
                    client_nonce: vec![2; 32],
                    proof: crate::auth::Secret::new("example-secret-0123")
                        .expect("long enough")
                        .client_proof(&[1; 32], &[2; 32]),
                }),
            ),
        ),
        (
            "Response 1: Challenge { nonce: 32 × 0x01 }",
            frame(1, &Response::Challenge(Challenge { nonce: vec![1; 32] })),
        ),
        ("Request 6: ClusterStatus", frame(6, &Request::ClusterStatus)),
        (
            "Response 6: Cluster { epoch: 0x0102030405060708, node: 9, members: [{ node: 9, addr: \"10.0.0.1:7400\", incarnation: 2, shards: 4, state: 1 (up), state_ms: 1500 }] }",
            frame(
                6,
                &Response::Cluster(ClusterView {
                    epoch: 0x0102_0304_0506_0708,
                    node: 9,
                    members: vec![MemberInfo {
                        node: 9,
                        addr: b"10.0.0.1:7400".to_vec(),
                        incarnation: 2,
                        shards: 4,
                        state: MEMBER_UP,
                        state_ms: 1500,
                    }],
                }),
            ),
        ),
        (
            "Response 3: Error { code: 8, message: \"mismatch\" }",
            frame(
                3,
                &Response::Error(ErrorBody {
                    code: 8,
                    message: b"mismatch".to_vec(),
                }),
            ),
        ),
    ]
}

const DOC: &str = include_str!("../../docs/wire-protocol.md");

#[test]
fn hex_examples_in_the_doc_match_the_encoder() {
    let mut missing = Vec::new();
    for (title, bytes) in examples() {
        let block = format!("#### {title}\n\n```\n{}\n```\n", hex(&bytes));
        if !DOC.contains(&block) {
            missing.push(block);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/wire-protocol.md is out of date; its examples should read:\n\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_status_code_is_in_the_doc_with_its_name() {
    for status in crate::Status::ALL {
        let row = format!("| {} | `{}` |", status.code(), status.name());
        assert!(
            DOC.contains(&row),
            "docs/wire-protocol.md lacks the status row starting {row:?}"
        );
    }
}

#[test]
fn inline_sizes_in_the_doc_match_the_archive() {
    let sizes = [
        ("Hello", size_of::<ArchivedHello>(), 12),
        ("KvGet", size_of::<ArchivedKvGet>(), 8),
        ("KvPut", size_of::<ArchivedKvPut>(), 33),
        ("KvDelete", size_of::<ArchivedKvDelete>(), 8),
        ("FnCall", size_of::<ArchivedFnCall>(), 20),
        ("Arg", size_of::<ArchivedArg>(), 9),
        ("FunctionDef", size_of::<ArchivedFunctionDef>(), 29),
        ("FunctionBody", size_of::<ArchivedFunctionBody>(), 21),
        ("WasmBody", size_of::<ArchivedWasmBody>(), 20),
        ("FunctionName", size_of::<ArchivedFunctionName>(), 8),
        ("DagDef", size_of::<ArchivedDagDef>(), 24),
        ("DagFunction", size_of::<ArchivedDagFunction>(), 16),
        ("DagEdge", size_of::<ArchivedDagEdge>(), 16),
        ("DagCall", size_of::<ArchivedDagCall>(), 49),
        ("SourceArgs", size_of::<ArchivedSourceArgs>(), 16),
        ("DagName", size_of::<ArchivedDagName>(), 8),
        ("Request", size_of::<ArchivedRequest>(), 50),
        ("Authenticate", size_of::<ArchivedAuthenticate>(), 16),
        ("Challenge", size_of::<ArchivedChallenge>(), 8),
        ("Welcome", size_of::<ArchivedWelcome>(), 93),
        ("LwwValue", size_of::<ArchivedLwwValue>(), 24),
        ("PriorityValue", size_of::<ArchivedPriorityValue>(), 16),
        ("ClockEntry", size_of::<ArchivedClockEntry>(), 16),
        ("Dependency", size_of::<ArchivedDependency>(), 16),
        ("CausalVersion", size_of::<ArchivedCausalVersion>(), 24),
        ("Value", size_of::<ArchivedValue>(), 25),
        (
            "Option<Value>",
            size_of::<rkyv::option::ArchivedOption<ArchivedValue>>(),
            26,
        ),
        ("ErrorBody", size_of::<ArchivedErrorBody>(), 10),
        ("Deleted", size_of::<ArchivedDeleted>(), 1),
        ("ShardInfo", size_of::<ArchivedShardInfo>(), 10),
        ("RingToken", size_of::<ArchivedRingToken>(), 10),
        ("RingInfo", size_of::<ArchivedRingInfo>(), 13),
        ("Limits", size_of::<ArchivedLimits>(), 20),
        ("Topology", size_of::<ArchivedTopology>(), 84),
        ("ShardStats", size_of::<ArchivedShardStats>(), 178),
        ("ClusterView", size_of::<ArchivedClusterView>(), 24),
        ("MemberInfo", size_of::<ArchivedMemberInfo>(), 35),
        ("MergeBatch", size_of::<ArchivedMergeBatch>(), 8),
        ("MergeEntry", size_of::<ArchivedMergeEntry>(), 51),
        ("DeletedAt", size_of::<ArchivedDeletedAt>(), 16),
        ("KvPutConcern", size_of::<ArchivedKvPutConcern>(), 34),
        ("ClusterTopology", size_of::<ArchivedClusterTopology>(), 37),
        ("DigestRequest", size_of::<ArchivedDigestRequest>(), 18),
        ("Response", size_of::<ArchivedResponse>(), 179),
    ];
    let wrong: Vec<String> = sizes
        .iter()
        .filter(|(_, actual, documented)| actual != documented)
        .map(|(name, actual, documented)| format!("{name}: {actual} (test says {documented})"))
        .collect();
    assert!(wrong.is_empty(), "inline sizes changed: {wrong:?}");
    for (name, _, documented) in sizes {
        assert!(
            DOC.contains(&format!("| `{name}` | {documented} |")),
            "the doc's size table lacks {name}"
        );
    }
}

#[test]
fn an_empty_vector_points_at_the_start_of_its_object() {
    // What the doc tells other-language encoders: an empty vector's offset
    // points at the first byte of the root object that contains it (the
    // reference encoder does exactly that when nothing precedes the root).
    let f = frame(
        1,
        &Request::Hello(Hello {
            protocol_version: 1,
            client_name: vec![],
        }),
    );
    let body = &f[crate::frame::FRAME_HEADER_BYTES..];
    assert_eq!(body.len(), 50, "{}", hex(body));
    assert_eq!(&body[5..9], &(-5i32).to_le_bytes(), "{}", hex(body));
    assert!(crate::frame::decode_request(body).is_ok());
}
