//! Stable status codes. A code, once published, never changes meaning; new
//! codes are only added. Every error response carries one of these plus a
//! human-readable sentence.

/// Why a request failed. `repr(u16)`: the number is the wire value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    /// The frame body is not a valid archived request.
    BadFrame = 1,
    /// The frame announced a body above the limit; the connection closes.
    FrameTooLarge = 2,
    /// The client's protocol version is not supported.
    VersionMismatch = 3,
    /// The first request on a connection must be `Hello`.
    HandshakeRequired = 4,
    /// A request field is invalid (empty key, too many keys, …).
    InvalidArgument = 5,
    /// A key exceeds the key size limit.
    KeyTooLarge = 6,
    /// A value exceeds the value size limit.
    ValueTooLarge = 7,
    /// The put's lattice type differs from the key's type.
    TypeMismatch = 8,
    /// The node is at a limit (connections, queue depth); retry later.
    Overloaded = 9,
    /// The node is shutting down; retry on another node or later.
    ShuttingDown = 10,
    /// The write could not be made durable; it may not have been applied.
    StorageFailure = 11,
    /// The request did not complete within its deadline.
    Timeout = 12,
    /// A bug in the node; the message says what happened.
    Internal = 13,
    /// The function returned an error or panicked; the message names it.
    FunctionFailed = 14,
    /// No function is registered under that name.
    UnknownFunction = 15,
    /// No DAG is registered under that name.
    UnknownDag = 16,
    /// The DAG was refused at registration; the message says why.
    InvalidDag = 17,
    /// A sandboxed function broke a limit set at its registration (memory,
    /// CPU time, result size); the message says which.
    LimitExceeded = 18,
    /// A client-supplied clock (an LWW timestamp, a vector-clock entry)
    /// leads the node's by more than the documented bound; nothing changed.
    ClockSkew = 19,
    /// The node requires authentication and this connection has not proved
    /// a secret (or proved a wrong one); the connection closes.
    Unauthenticated = 20,
    /// The connection's role may not make this request; the message names
    /// the role required.
    Forbidden = 21,
    /// A request another node forwarded names a key this node does not
    /// own (their views of the cluster differ for a moment); the message
    /// names the owner this node sees. Retry.
    WrongOwner = 22,
    /// The node that owns the key cannot be reached now (it is down or
    /// unreachable); the message names it. Retry later.
    Unavailable = 23,
    /// An atomic call's runs kept reading versions older than a write set
    /// they had seen part of (a commit being applied under them), past the
    /// re-runs this allows; nothing was written. Retry.
    Conflict = 24,
}

impl Status {
    /// All codes, in numeric order.
    pub const ALL: [Status; 24] = [
        Status::BadFrame,
        Status::FrameTooLarge,
        Status::VersionMismatch,
        Status::HandshakeRequired,
        Status::InvalidArgument,
        Status::KeyTooLarge,
        Status::ValueTooLarge,
        Status::TypeMismatch,
        Status::Overloaded,
        Status::ShuttingDown,
        Status::StorageFailure,
        Status::Timeout,
        Status::Internal,
        Status::FunctionFailed,
        Status::UnknownFunction,
        Status::UnknownDag,
        Status::InvalidDag,
        Status::LimitExceeded,
        Status::ClockSkew,
        Status::Unauthenticated,
        Status::Forbidden,
        Status::WrongOwner,
        Status::Unavailable,
        Status::Conflict,
    ];

    /// The wire value.
    #[must_use]
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The status with this wire value.
    #[must_use]
    pub fn from_code(code: u16) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Stable snake-case name, for logs and JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Status::BadFrame => "bad_frame",
            Status::FrameTooLarge => "frame_too_large",
            Status::VersionMismatch => "version_mismatch",
            Status::HandshakeRequired => "handshake_required",
            Status::InvalidArgument => "invalid_argument",
            Status::KeyTooLarge => "key_too_large",
            Status::ValueTooLarge => "value_too_large",
            Status::TypeMismatch => "type_mismatch",
            Status::Overloaded => "overloaded",
            Status::ShuttingDown => "shutting_down",
            Status::StorageFailure => "storage_failure",
            Status::Timeout => "timeout",
            Status::Internal => "internal",
            Status::FunctionFailed => "function_failed",
            Status::UnknownFunction => "unknown_function",
            Status::UnknownDag => "unknown_dag",
            Status::InvalidDag => "invalid_dag",
            Status::LimitExceeded => "limit_exceeded",
            Status::ClockSkew => "clock_skew",
            Status::Unauthenticated => "unauthenticated",
            Status::Forbidden => "forbidden",
            Status::WrongOwner => "wrong_owner",
            Status::Unavailable => "unavailable",
            Status::Conflict => "conflict",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        for (i, s) in Status::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(s.code()), i + 1, "codes are dense from 1");
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        assert_eq!(Status::from_code(0), None);
        assert_eq!(Status::TypeMismatch.code(), 8);
    }
}
