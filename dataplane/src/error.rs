//! The node's one error type: what a request failed with, as the client
//! will see it (a stable [`Status`] and a sentence), and whether running it
//! again may help. Every layer from the shard to the connection returns
//! it; the errors below it (`StorageError`, `PartitionError`, `FnError`)
//! are typed and convert into it. Only the binary's edges (start-up, the
//! CLI) use `anyhow`.

use executor::function::FnError;
use executor::store::StoreError;
use kvs_core::partition::PartitionError;
use wire::Status;

use crate::storage::StorageError;

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub(crate) struct NodeError {
    pub status: Status,
    pub message: String,
    /// Whether running the same request again may succeed (a DAG call
    /// re-runs on such failures when it asked for retries).
    pub retriable: bool,
}

impl NodeError {
    pub fn new(status: Status, message: impl Into<String>) -> NodeError {
        NodeError {
            status,
            message: message.into(),
            retriable: false,
        }
    }

    pub fn retriable(status: Status, message: impl Into<String>) -> NodeError {
        NodeError {
            retriable: true,
            ..NodeError::new(status, message)
        }
    }

    /// A write stands here, but only `got` of the `need` other copies its
    /// write concern asks for acknowledged it within `timeout_ms`.
    pub fn copies_missing(got: usize, need: usize, timeout_ms: u64) -> NodeError {
        NodeError::retriable(
            Status::Unavailable,
            format!(
                "written here, but only {got} of the {need} other copies the write concern \
                 needs acknowledged it within {timeout_ms} ms; it will still reach them"
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> NodeError {
        NodeError::new(Status::Internal, message)
    }
}

impl From<StorageError> for NodeError {
    fn from(e: StorageError) -> NodeError {
        NodeError::new(Status::StorageFailure, e.to_string())
    }
}

impl From<FnError> for NodeError {
    fn from(e: FnError) -> NodeError {
        NodeError {
            status: match e {
                FnError::LimitExceeded { .. }
                | FnError::Store {
                    source: StoreError::LimitExceeded(_),
                    ..
                } => Status::LimitExceeded,
                FnError::Store {
                    source: StoreError::Conflict(_),
                    ..
                } => Status::Conflict,
                _ => Status::FunctionFailed,
            },
            retriable: e.is_retriable(),
            message: e.to_string(),
        }
    }
}

impl From<PartitionError> for NodeError {
    fn from(e: PartitionError) -> NodeError {
        let status = match e {
            PartitionError::TypeMismatch { .. } => Status::TypeMismatch,
            PartitionError::KeyTooLarge { .. } => Status::KeyTooLarge,
            PartitionError::ValueTooLarge { .. } | PartitionError::EncodingTooLarge { .. } => {
                Status::ValueTooLarge
            }
            PartitionError::ClockAhead { .. } | PartitionError::VectorClockAhead { .. } => {
                Status::ClockSkew
            }
            PartitionError::EmptyKey => Status::InvalidArgument,
        };
        NodeError::new(status, e.to_string())
    }
}
