//! Every request and response. Byte strings (keys, values, text) are
//! `Vec<u8>`; text is UTF-8. Archived layouts are specified in
//! `docs/wire-protocol.md`.

use rkyv::{Archive, Deserialize, Serialize};

/// A client's request. The first request on a connection must be `Hello`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Request {
    Hello(Hello),
    Ping,
    Get(KvGet),
    Put(KvPut),
    Delete(KvDelete),
    Stats,
    /// Calls one registered function on an executor beside the shard.
    Call(FnCall),
    /// Lists registered function names.
    ListFunctions,
    /// Registers (or replaces) a DAG; validated first.
    RegisterDag(DagDef),
    /// Runs a DAG; the reply is its sink's result.
    CallDag(DagCall),
    DeleteDag(DagName),
    /// Lists the DAGs whose registry key this shard owns.
    ListDags,
    /// Registers (or replaces) a function under a name; stored in the KVS.
    RegisterFunction(FunctionDef),
    /// Removes a registered function (built-ins cannot be removed).
    DeleteFunction(FunctionName),
    /// Answers a `Challenge`: proves the client holds a secret
    /// (`wire::auth`).
    Authenticate(Authenticate),
    /// Asks the node for its view of the cluster (version 4).
    ClusterStatus,
    /// Asks the node to leave the cluster and stop, gracefully (version 4).
    Leave,
    /// Reads keys from this node's own copy, never routed to another node
    /// (version 4; for checking where keys live and whether copies agree).
    GetLocal(KvGet),
    /// Keys handed over by another node: merged into this node's copy,
    /// durable before `Stored` (version 4; node to node, admin).
    Merge(MergeBatch),
    /// A put acknowledged once `concern` copies have it (version 4).
    PutConcern(KvPutConcern),
    /// The range digest of the keys the answering node and the asker both
    /// hold (version 5; node to node, admin: anti-entropy).
    Digest(DigestRequest),
    /// Reads keys for the asking node's cache and subscribes it to them:
    /// the answering node pushes their changes (`CacheUpdate`) until the
    /// lease it grants ends (version 7; node to node, admin).
    Subscribe(KvSubscribe),
    /// Changes of keys a node's cache subscribed to, each as the sender
    /// holds it (version 7; node to node, admin).
    CacheUpdate(MergeBatch),
    /// Stores a value under a key that holds none; a key that holds a
    /// value keeps it. The reply is `Values([previous])`: `None` when this
    /// value was stored (version 9; how atomic calls commit).
    PutIfAbsent(KvPut),
    /// Runs one function of a DAG call for the node running the call,
    /// under the call's session (version 10; node to node). The reply is
    /// `Stepped`.
    RunStep(RunStep),
    /// Runs a chain of a DAG call's functions node to node: the first
    /// segment here, the rest sent on by this node; never answered — the
    /// chain's outcome goes to `reply_to` as `ChainDone` (version 11; node
    /// to node). Boxed: its fields would make every request's inline part
    /// larger, a changed layout.
    RunChain(Box<RunChain>),
    /// The outcome of a chain, for the node running its call; never
    /// answered (version 11; node to node).
    ChainDone(ChainDone),
}

/// Consecutive functions of one chain that run on one node.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ChainSegment {
    /// The node's address in the cluster view (`ip:port`); the first
    /// segment's is the answering node's own.
    pub node: Vec<u8>,
    /// The functions' registered names, in chain order.
    pub functions: Vec<Vec<u8>>,
}

/// A chain of a DAG call's functions (each the only input of the next),
/// planned on other nodes than the calling one.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RunChain {
    /// The segments still to run; the first runs on the answering node.
    pub segments: Vec<ChainSegment>,
    /// The first function's arguments.
    pub args: Vec<Arg>,
    /// How long the rest of the chain may take; 0 means the node's default.
    pub timeout_ms: u32,
    /// The session as the calling node sent it.
    pub session: Vec<u8>,
    /// What the chain's earlier segments added to it (`session`'s
    /// encoding; empty for the first segment).
    pub added: Vec<u8>,
    /// The functions of the chain that ran before these segments.
    pub ran: u32,
    /// Where the outcome goes (`ChainDone`): the calling node's address in
    /// the cluster view (`ip:port`), and the token it gave the chain.
    pub reply_to: Vec<u8>,
    pub token: u64,
}

/// A chain's outcome, for the node running its call.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ChainDone {
    /// `RunChain.token`.
    pub token: u64,
    pub outcome: ChainOutcome,
}

/// How a chain ended.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ChainOutcome {
    /// Every function ran: the last one's result, and what the chain
    /// added to the session.
    Done(Stepped),
    /// A node refused its segment as overloaded (it ran nothing of it):
    /// the calling node runs the rest.
    Refused(ChainRefused),
    /// A function failed, or a segment could not be run or sent on.
    Failed(ErrorBody),
}

/// Where a chain stopped because a node refused its segment.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ChainRefused {
    /// The functions of the chain that ran.
    pub ran: u32,
    /// The refused function's arguments.
    pub args: Vec<Arg>,
    /// What the functions that ran added to the session.
    pub session: Vec<u8>,
}

/// One function of a DAG call, planned on the answering node.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RunStep {
    /// The function's registered name.
    pub function: Vec<u8>,
    pub args: Vec<Arg>,
    /// How long the step may take; 0 means the node's default.
    pub timeout_ms: u32,
    /// The call's session (consistency mode, pins, kept writes, floors),
    /// in `executor::session`'s encoding.
    pub session: Vec<u8>,
}

/// `RunStep`'s answer: the function's result, and what its run added to
/// the call's session.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Stepped {
    pub output: Vec<u8>,
    pub session: Vec<u8>,
}

/// Keys to read for a node's cache, and where their changes go.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct KvSubscribe {
    pub keys: Vec<Vec<u8>>,
    /// The subscribing node's address in the cluster view (`ip:port`).
    pub subscriber: Vec<u8>,
}

/// Which keys a `Digest` covers: those the asking `node` and the answering
/// node both hold in view `epoch`, and that live on shard `shard` of the
/// asker.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DigestRequest {
    pub node: u64,
    pub epoch: u64,
    pub shard: u16,
}

/// A put with its write concern.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct KvPutConcern {
    pub key: Vec<u8>,
    pub value: Value,
    /// `WRITE_CONCERN_ONE`, `_QUORUM` or `_ALL`.
    pub concern: u8,
}

/// [`KvPutConcern::concern`]: the copy on the node that takes the write.
pub const WRITE_CONCERN_ONE: u8 = 1;
/// A majority of the key's holders.
pub const WRITE_CONCERN_QUORUM: u8 = 2;
/// Every holder in the node's current view.
pub const WRITE_CONCERN_ALL: u8 = 3;

/// Keys one node hands to another, each as the sender holds it (merged).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MergeBatch {
    pub entries: Vec<MergeEntry>,
}

/// One key's state: a value, or a tombstone (exactly one of the two).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MergeEntry {
    pub key: Vec<u8>,
    pub value: Option<Value>,
    /// The key was deleted at this timestamp.
    pub deleted: Option<DeletedAt>,
}

/// A tombstone's timestamp (an LWW timestamp: clock, then writer).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeletedAt {
    pub clock: u64,
    pub writer: u64,
}

/// The client's half of the challenge–response (`wire::auth`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Authenticate {
    /// 32 random bytes of the client's.
    pub client_nonce: Vec<u8>,
    /// HMAC-SHA256(secret, "squall-auth-v1 client" ‖ nonce ‖ client_nonce).
    pub proof: Vec<u8>,
}

/// A node that requires authentication answers `Hello` with this.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Challenge {
    /// 32 random bytes, fresh for this connection.
    pub nonce: Vec<u8>,
}

/// A successful authentication: the connection's role, the node's own
/// proof, and the topology `Hello` gives on an open node.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Welcome {
    /// `wire::auth::Role` code: 1 read, 2 write, 3 admin.
    pub role: u8,
    /// HMAC-SHA256(secret, "squall-auth-v1 node" ‖ nonce ‖ client_nonce).
    pub proof: Vec<u8>,
    pub topology: Topology,
}

/// A function registration.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FunctionDef {
    pub name: Vec<u8>,
    pub body: FunctionBody,
}

/// What a registered function runs.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum FunctionBody {
    /// A built-in function (by its name), under the new name.
    Builtin(Vec<u8>),
    /// An uploaded WebAssembly module, run sandboxed.
    Wasm(WasmBody),
    /// Inference with the model stored under this name (see [`crate::model`]):
    /// one argument, the input tensor; the result, the output tensor.
    Model(Vec<u8>),
}

/// A WebAssembly module and its sandbox limits (0 = the node's default).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct WasmBody {
    pub module: Vec<u8>,
    pub memory_mb: u32,
    pub timeout_ms: u32,
    pub result_bytes_max: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FunctionName {
    pub name: Vec<u8>,
}

/// A call argument.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Arg {
    /// These bytes.
    Value(Vec<u8>),
    /// The LWW value of this key, read just before the function runs.
    Ref(Vec<u8>),
}

impl Arg {
    /// A byte-string argument.
    #[must_use]
    pub fn value(bytes: impl Into<Vec<u8>>) -> Arg {
        Arg::Value(bytes.into())
    }
}

/// A DAG: functions (with options) and edges between them.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DagDef {
    pub name: Vec<u8>,
    /// In this order: fan-in arguments follow it.
    pub functions: Vec<DagFunction>,
    pub edges: Vec<DagEdge>,
}

impl DagDef {
    /// A DAG of plainly-run functions (one replica, no batching), listed in
    /// `functions` order, with `(from, to)` edges.
    #[must_use]
    pub fn new(name: &str, functions: &[&str], edges: &[(&str, &str)]) -> DagDef {
        DagDef {
            name: name.as_bytes().to_vec(),
            functions: functions
                .iter()
                .map(|f| DagFunction {
                    name: f.as_bytes().to_vec(),
                    replicas: 1,
                    batch_max: 1,
                })
                .collect(),
            edges: edges
                .iter()
                .map(|(a, b)| DagEdge {
                    from: a.as_bytes().to_vec(),
                    to: b.as_bytes().to_vec(),
                })
                .collect(),
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DagFunction {
    pub name: Vec<u8>,
    /// Competing copies (1 = plain).
    pub replicas: u32,
    /// Triggers per invocation (1 = no batching).
    pub batch_max: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DagEdge {
    pub from: Vec<u8>,
    pub to: Vec<u8>,
}

/// A DAG call: arguments for source functions, by name.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DagCall {
    pub name: Vec<u8>,
    pub args: Vec<SourceArgs>,
    /// Deadline of each run; 0 means the node's default.
    pub timeout_ms: u32,
    /// Empty: the result comes back in the reply. Otherwise the reply is
    /// `Pending(key)` at once and the result is stored under this key.
    pub output_key: Vec<u8>,
    /// Continuations: DAGs run one after another, each source of each
    /// getting the previous result as its one argument.
    pub then: Vec<Vec<u8>>,
    /// Re-runs after a run that timed out, panicked or found no executor.
    pub retries: u32,
    /// The consistency mode of each run ([`Consistency`] code; version 8).
    pub consistency: u8,
    /// 0: the functions' writes go to the store as they are made.
    /// Otherwise the call is atomic and this is its transaction id: each
    /// run's writes are kept until it ends, then committed as one write
    /// set, once — a re-run of the call (here, on another node, or a
    /// re-send with the same id) takes effect at most once (version 9).
    pub txn: u64,
}

/// A DAG call's consistency mode: what its functions' reads may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Consistency {
    /// Each read sees the newest version the node has (the default).
    Lww = 0,
    /// Distributed-session repeatable read: every function of a run sees
    /// the version of a key the run first read, or the run's own write.
    Dsrr = 1,
    /// Single-key causal: each read of a key returns the merge of every
    /// version of it the run has seen (never older).
    SingleKeyCausal = 2,
    /// Multi-key causal: read-atomic, and never older than a dependency of
    /// what the run read. Always atomic: a call without `txn` runs under an
    /// id the node draws.
    MultiKeyCausal = 3,
    /// Distributed-session causal: as `MultiKeyCausal`, across the whole
    /// run.
    DistributedSessionCausal = 4,
}

impl Consistency {
    pub const ALL: [Consistency; 5] = [
        Consistency::Lww,
        Consistency::Dsrr,
        Consistency::SingleKeyCausal,
        Consistency::MultiKeyCausal,
        Consistency::DistributedSessionCausal,
    ];

    /// Its name on the command line: `lww`, `dsrr`, `sk`, `mk`, `dsc`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Lww => "lww",
            Consistency::Dsrr => "dsrr",
            Consistency::SingleKeyCausal => "sk",
            Consistency::MultiKeyCausal => "mk",
            Consistency::DistributedSessionCausal => "dsc",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Consistency> {
        Consistency::ALL.into_iter().find(|c| c.name() == name)
    }

    #[must_use]
    pub fn from_code(code: u8) -> Option<Consistency> {
        Consistency::ALL.into_iter().find(|&c| c as u8 == code)
    }
}

impl DagCall {
    /// A direct call: `args` per source function, default options.
    #[must_use]
    pub fn new(name: &str, args: Vec<SourceArgs>) -> DagCall {
        DagCall {
            name: name.as_bytes().to_vec(),
            args,
            timeout_ms: 0,
            output_key: Vec::new(),
            then: Vec::new(),
            retries: 0,
            consistency: Consistency::Lww as u8,
            txn: 0,
        }
    }

    /// The same call, atomic, with transaction id `txn` (1 to 2^58 − 1):
    /// send it again with the same id and its effects still happen once.
    #[must_use]
    pub fn with_txn(mut self, txn: u64) -> DagCall {
        self.txn = txn;
        self
    }

    /// The same call in consistency mode `c`.
    #[must_use]
    pub fn with_consistency(mut self, c: Consistency) -> DagCall {
        self.consistency = c as u8;
        self
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SourceArgs {
    pub function: Vec<u8>,
    pub args: Vec<Arg>,
}

impl SourceArgs {
    /// Byte-string arguments for `function`.
    #[must_use]
    pub fn values(function: &str, args: Vec<Vec<u8>>) -> SourceArgs {
        SourceArgs {
            function: function.as_bytes().to_vec(),
            args: args.into_iter().map(Arg::Value).collect(),
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DagName {
    pub name: Vec<u8>,
}

/// A single-function call.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FnCall {
    pub function: Vec<u8>,
    pub args: Vec<Arg>,
    /// Deadline; 0 means the node's default.
    pub timeout_ms: u32,
}

/// Opens a session: the node answers with its topology.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Hello {
    pub protocol_version: u32,
    /// Free text for the node's logs.
    pub client_name: Vec<u8>,
}

/// Reads one or more keys; the reply lists values in request order.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct KvGet {
    pub keys: Vec<Vec<u8>>,
}

/// Merges a value into a key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct KvPut {
    pub key: Vec<u8>,
    pub value: Value,
}

/// Deletes a key (leaves a tombstone stamped by the node).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct KvDelete {
    pub key: Vec<u8>,
}

/// A lattice-typed value.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Value {
    /// Last writer wins. In a put, `timestamp == 0` asks the node to stamp
    /// it with its hybrid clock (and its own writer id).
    Lww(LwwValue),
    Set(Vec<Vec<u8>>),
    /// Read back in byte-lexicographic order.
    OrderedSet(Vec<Vec<u8>>),
    Max(u64),
    /// Lowest priority wins.
    Priority(PriorityValue),
    SingleKeyCausal(Vec<CausalVersion>),
    MultiKeyCausal(Vec<CausalVersion>),
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LwwValue {
    /// Microseconds; 0 in a put means "node, stamp this".
    pub timestamp: u64,
    pub writer: u64,
    pub bytes: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PriorityValue {
    pub priority: u64,
    pub bytes: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CausalVersion {
    pub clock: Vec<ClockEntry>,
    /// Always empty for single-key causal values.
    pub deps: Vec<Dependency>,
    pub bytes: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClockEntry {
    pub node: u64,
    pub counter: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Dependency {
    pub key: Vec<u8>,
    pub clock: Vec<ClockEntry>,
}

/// A node's answer. Each response frame carries the request id of the
/// request it answers; on one connection responses may arrive out of order.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Response {
    Hello(Topology),
    Pong,
    /// One entry per requested key, in request order; `None` = not found.
    Values(Vec<Option<Value>>),
    Stored,
    Deleted(Deleted),
    Stats(ShardStats),
    Error(ErrorBody),
    /// A function's result.
    Output(Vec<u8>),
    /// Registered function names, sorted.
    Functions(Vec<Vec<u8>>),
    /// DAG names, sorted.
    Dags(Vec<Vec<u8>>),
    /// The call was accepted; its result will be stored under this key
    /// (or, if it fails, its error under `squall:error:<key>`).
    Pending(Vec<u8>),
    /// The node requires authentication: answer with `Authenticate`.
    Challenge(Challenge),
    /// Authenticated.
    Welcome(Welcome),
    /// The answering node's view of its cluster (version 4).
    Cluster(ClusterView),
    /// The node is leaving: it serves what it has begun, leaves the
    /// membership, syncs its WAL and exits (version 4).
    Leaving,
    /// A range digest (`kvs_core::digest`): 64 sums, one per range of the
    /// node ring (version 5).
    Digest(Vec<u64>),
    /// `Subscribe`'s answer: the values, one per key, and how long the
    /// subscription lasts (0: none; the values must not be cached)
    /// (version 7).
    Leased(Leased),
    /// `CacheUpdate`'s answer when the cache no longer holds some of its
    /// keys (evicted, expired): their leases end (version 7).
    Evicted(Vec<Vec<u8>>),
    /// `RunStep`'s answer (version 10).
    Stepped(Stepped),
}

/// Values read for a node's cache, and the lease on their changes.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Leased {
    pub values: Vec<Option<Value>>,
    pub lease_ms: u32,
}

/// A node's view of its cluster: every member it knows of (itself
/// included), and the epoch of the ones keys are placed on.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClusterView {
    /// `kvs_core::cluster::epoch` of the members that are up (`MEMBER_UP`):
    /// nodes with the same view report the same epoch.
    pub epoch: u64,
    /// The answering node's id.
    pub node: u64,
    /// Sorted by address.
    pub members: Vec<MemberInfo>,
}

/// One member as a node sees it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MemberInfo {
    pub node: u64,
    /// `host:port` of its shard 0: clients connect there (TCP), members
    /// gossip there (UDP).
    pub addr: Vec<u8>,
    /// Bumped at every start of the node.
    pub incarnation: u64,
    pub shards: u16,
    /// `MEMBER_UP`, `MEMBER_DOWN` or `MEMBER_LEAVING`.
    pub state: u8,
    /// Milliseconds since the answering node saw `state` begin.
    pub state_ms: u64,
}

/// [`MemberInfo::state`]: a live member.
pub const MEMBER_UP: u8 = 1;
/// [`MemberInfo::state`]: declared down (failed, or left).
pub const MEMBER_DOWN: u8 = 2;
/// [`MemberInfo::state`]: the answering node itself, handing its keys over
/// before it stops (version 5): no key is placed on it.
pub const MEMBER_LEAVING: u8 = 3;

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Deleted {
    /// Whether a live value went away.
    pub removed: bool,
}

/// An error: a stable code (`Status`) and a sentence for humans.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ErrorBody {
    pub code: u16,
    pub message: Vec<u8>,
}

/// What a client needs to route requests itself.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Topology {
    pub protocol_version: u32,
    /// The shard that answered.
    pub shard: u16,
    pub shards: Vec<ShardInfo>,
    pub ring: RingInfo,
    pub limits: Limits,
    /// The node's cluster (version 5): enough to place any key on its
    /// nodes (`kvs_core::cluster`'s specification).
    pub cluster: ClusterTopology,
}

/// Where keys live across the nodes, as the answering node sees it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClusterTopology {
    /// The answering node's id.
    pub node: u64,
    /// Copies of each key (`--replication`).
    pub replication: u8,
    /// Tokens per node on the node ring.
    pub node_vnodes: u32,
    /// Keys are placed on the members whose state is `MEMBER_UP`; `epoch`
    /// is theirs. The same shape as `ClusterStatus`'s answer, which a
    /// client asks for again when a reply's epoch differs from its own.
    pub view: ClusterView,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ShardInfo {
    pub id: u16,
    /// `host:port` of the shard's own listener.
    pub addr: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RingInfo {
    /// `RING_HASH_XXH64`.
    pub hash: u8,
    pub vnodes_per_shard: u32,
    /// Sorted by position; a key belongs to the first token whose position
    /// is `>=` xxh64(key), wrapping to the first token.
    pub tokens: Vec<RingToken>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RingToken {
    pub position: u64,
    pub shard: u16,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Limits {
    pub frame_body_bytes_max: u32,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    pub keys_per_get_max: u32,
    pub connections_max: u32,
}

/// One shard's counters.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ShardStats {
    pub shard: u16,
    pub live_keys: u64,
    pub tombstones: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub errors: u64,
    /// Requests this shard received for keys it does not own.
    pub forwarded_out: u64,
    /// Requests other shards forwarded here.
    pub forwarded_in: u64,
    pub connections: u64,
    pub connections_refused: u64,
    pub last_lsn: u64,
    pub durable_lsn: u64,
    pub wal_bytes: u64,
    pub snapshots: u64,
    pub uptime_ms: u64,
    /// Requests this shard sent on to another node (version 5).
    pub node_forwards: u64,
    /// Requests whose header epoch was neither 0 nor this node's (version
    /// 5): sent by a client routing by an older view.
    pub stale_epoch: u64,
    /// Of `live_keys`, those whose primary this node is (version 6); the
    /// rest are copies held for other primaries. A lone node is every
    /// key's primary, a leaving one none's.
    pub primary_keys: u64,
    /// The node's cache of other nodes' keys (version 8; node-wide, so
    /// only shard 0 reports them, the other shards 0): keys and bytes held
    /// now, functions' reads it answered and reads it could not.
    pub cache_keys: u64,
    pub cache_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}
