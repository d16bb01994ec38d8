//! How a model is stored in the KVS.
//!
//! A model file (ONNX) is usually larger than one value may be
//! (`kvs_core::limits::VALUE_BYTES_MAX`, 1 MiB), so it is stored as chunks
//! of [`CHUNK_BYTES`] under keys named by the model's content hash, plus a
//! small manifest under the model's name, written last:
//!
//! * `squall:model:<name>` — the [`Manifest`]: format version (u8 = 1),
//!   model size in bytes (u64 LE), XXH64 (seed 0) of the model (u64 LE);
//! * `squall:model-chunk:<name>:<hash as 16 hex digits>:<index>` — bytes
//!   `index * CHUNK_BYTES ..` of the model, every chunk full but the last;
//! * `squall:labels:<name>` — optional class labels, one `index,label` per
//!   line (split on the first comma).
//!
//! All are LWW values. Because chunks are named by hash, replacing a model
//! never changes chunks a reader of the old manifest may still be reading;
//! a reader checks the hash of what it assembled before use.

/// Prefix of model manifests (`squall:model:<name>`).
pub const MANIFEST_KEY_PREFIX: &str = "squall:model:";
/// Prefix of model chunks.
pub const CHUNK_KEY_PREFIX: &str = "squall:model-chunk:";
/// Prefix of models' class labels (`squall:labels:<name>`).
pub const LABELS_KEY_PREFIX: &str = "squall:labels:";
/// Bytes per chunk: half the value limit, so a chunk and its key always fit.
pub const CHUNK_BYTES: usize = 512 * 1024;
/// Largest model accepted: bounds what one executor assembles in memory.
pub const MODEL_BYTES_MAX: u64 = 256 << 20;

const VERSION: u8 = 1;
const MANIFEST_BYTES: usize = 17;

/// What `squall:model:<name>` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub model_bytes: u64,
    /// XXH64, seed 0, of the whole model.
    pub hash: u64,
}

impl Manifest {
    /// How many chunks the model has.
    #[must_use]
    pub fn chunks(&self) -> u64 {
        self.model_bytes.div_ceil(CHUNK_BYTES as u64)
    }

    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANIFEST_BYTES);
        out.push(VERSION);
        out.extend_from_slice(&self.model_bytes.to_le_bytes());
        out.extend_from_slice(&self.hash.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let (&[VERSION], rest) = bytes.split_at(bytes.len().min(1)) else {
            return Err(format!(
                "not a model manifest (expected format version {VERSION})"
            ));
        };
        let (Ok(size), Ok(hash)) = (
            <[u8; 8]>::try_from(rest.get(..8).unwrap_or_default()),
            <[u8; 8]>::try_from(rest.get(8..).unwrap_or_default()),
        ) else {
            return Err(format!(
                "a model manifest is {MANIFEST_BYTES} bytes, not {}",
                bytes.len()
            ));
        };
        let m = Manifest {
            model_bytes: u64::from_le_bytes(size),
            hash: u64::from_le_bytes(hash),
        };
        if m.model_bytes == 0 || m.model_bytes > MODEL_BYTES_MAX {
            return Err(format!(
                "a model is 1 to {MODEL_BYTES_MAX} bytes, not {}",
                m.model_bytes
            ));
        }
        Ok(m)
    }
}

#[must_use]
pub fn manifest_key(name: &str) -> Vec<u8> {
    format!("{MANIFEST_KEY_PREFIX}{name}").into_bytes()
}

#[must_use]
pub fn chunk_key(name: &str, hash: u64, index: u64) -> Vec<u8> {
    format!("{CHUNK_KEY_PREFIX}{name}:{hash:016x}:{index}").into_bytes()
}

#[must_use]
pub fn labels_key(name: &str) -> Vec<u8> {
    format!("{LABELS_KEY_PREFIX}{name}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_garbage() {
        let m = Manifest {
            model_bytes: CHUNK_BYTES as u64 * 2 + 1,
            hash: 0xdead_beef,
        };
        assert_eq!(Manifest::decode(&m.encode()), Ok(m));
        assert_eq!(m.chunks(), 3);
        assert!(Manifest::decode(&[]).is_err());
        assert!(Manifest::decode(&m.encode()[..16]).is_err());
        assert!(Manifest::decode(&[2; 17]).is_err());
        let empty = Manifest {
            model_bytes: 0,
            hash: 1,
        };
        assert!(Manifest::decode(&empty.encode()).is_err());
    }

    #[test]
    fn chunk_keys_name_the_version() {
        assert_eq!(
            chunk_key("m", 255, 3),
            b"squall:model-chunk:m:00000000000000ff:3"
        );
    }
}
