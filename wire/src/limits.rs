//! Protocol limits. A node reports the values it enforces in its `Hello`
//! reply (`message::Limits`); these are the defaults and the hard caps.

/// Bytes in one frame body. Large enough for a maximal value plus its key
/// and framing, and for the handshake's token table (16 shards × 4096
/// tokens × 10 bytes); small enough that one connection cannot pin much
/// memory. A frame announcing more is refused and the connection closed
/// (the stream cannot be resynchronised).
pub const FRAME_BODY_BYTES_MAX: usize = 4 << 20;

/// Keys in one `Get`. Bounds the work and the reply size of one request.
pub const KEYS_PER_GET_MAX: usize = 1024;
