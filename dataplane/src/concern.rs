//! Write concern: how many of a key's copies a write waits for before it
//! is acknowledged (`--write-concern`, `PutConcern`), as the node's
//! connections, shards and CLI name it.

use wire::message as w;

/// How many of a key's copies a write waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteConcern {
    /// This node's copy.
    #[value(name = "1")]
    One,
    /// A majority of the key's holders.
    Quorum,
    /// Every holder in the current view.
    All,
}

impl WriteConcern {
    /// The concern of a wire code (`wire::message::WRITE_CONCERN_*`).
    #[must_use]
    pub fn from_code(code: u8) -> Option<WriteConcern> {
        match code {
            w::WRITE_CONCERN_ONE => Some(WriteConcern::One),
            w::WRITE_CONCERN_QUORUM => Some(WriteConcern::Quorum),
            w::WRITE_CONCERN_ALL => Some(WriteConcern::All),
            _ => None,
        }
    }

    /// Its wire code.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            WriteConcern::One => w::WRITE_CONCERN_ONE,
            WriteConcern::Quorum => w::WRITE_CONCERN_QUORUM,
            WriteConcern::All => w::WRITE_CONCERN_ALL,
        }
    }

    /// Copies needed out of `holders`.
    #[must_use]
    pub fn needed(self, holders: usize) -> usize {
        match self {
            WriteConcern::One => 1,
            WriteConcern::Quorum => holders / 2 + 1,
            WriteConcern::All => holders,
        }
    }
}
