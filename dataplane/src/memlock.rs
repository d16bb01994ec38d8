//! The locked-memory check made before any shard starts.
//!
//! Read from `/proc/self/limits` (no `unsafe`, no libc): the "Max locked
//! memory" soft limit, in bytes, or "unlimited".

use crate::limits::MEMLOCK_PER_SHARD_BYTES;

/// Fails with a sentence that says what to do when `shards` shards cannot
/// all get their locked memory.
pub fn check(shards: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some(limit) = parse_soft_limit(&limits) else {
        log::warn!("could not read the locked-memory limit; starting anyway");
        return Ok(());
    };
    check_against(shards, limit)
}

fn check_against(shards: usize, limit: Option<u64>) -> anyhow::Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    let need = shards as u64 * MEMLOCK_PER_SHARD_BYTES;
    if limit < need {
        let fit = limit / MEMLOCK_PER_SHARD_BYTES;
        anyhow::bail!(
            "the locked-memory limit (ulimit -l) is {} KiB, but {shards} shard(s) need {} KiB \
             ({} KiB each for io_uring). Raise it (ulimit -l {} as root, or memlock in \
             /etc/security/limits.conf) or run with --shards {}.",
            limit / 1024,
            need / 1024,
            MEMLOCK_PER_SHARD_BYTES / 1024,
            need / 1024,
            fit.max(1),
        );
    }
    Ok(())
}

/// `Some(None)` = unlimited, `Some(Some(bytes))`, `None` = not found.
fn parse_soft_limit(limits: &str) -> Option<Option<u64>> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line["Max locked memory".len()..]
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(None);
    }
    soft.parse().ok().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_limits() {
        let text = "Limit Soft Hard Units\nMax locked memory         8388608              8388608              bytes\n";
        assert_eq!(parse_soft_limit(text), Some(Some(8 << 20)));
        assert_eq!(
            parse_soft_limit("Max locked memory unlimited unlimited bytes"),
            Some(None)
        );
        assert_eq!(parse_soft_limit("nothing"), None);
    }

    #[test]
    fn refuses_too_many_shards_with_advice() {
        assert!(check_against(16, Some(8 << 20)).is_ok());
        let err = check_against(17, Some(8 << 20)).unwrap_err().to_string();
        assert!(err.contains("--shards 16"), "{err}");
        assert!(check_against(1000, None).is_ok());
    }
}
