//! What glommio needs from the kernel, checked before any shard starts so
//! that a missing piece is one sentence, not a panic in a shard thread:
//!
//! * locked memory, read from `/proc/self/limits` (the "Max locked memory"
//!   soft limit, in bytes, or "unlimited");
//! * io_uring itself: one ring is set up and closed ([`check_io_uring`]).

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

/// Fails with a sentence that says what to do when io_uring cannot be
/// used: a seccomp profile that blocks it (the default one of Docker ≥ 25
/// and containerd ≥ 2.0), `kernel.io_uring_disabled`, or an old kernel.
#[allow(unsafe_code)]
pub fn check_io_uring() -> anyhow::Result<()> {
    // struct io_uring_params: 120 bytes, zeroed = no flags.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(2) reads and writes exactly the 120-byte
    // io_uring_params at the pointer, which lives across the call; it
    // returns a new file descriptor that this function owns and closes.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!(
            "io_uring is not available here (io_uring_setup: {e}). A seccomp profile may block it \
             (Docker >= 25 and containerd >= 2.0 do by default: run with \
             deploy/kubernetes/seccomp/squall.json), or sysctl kernel.io_uring_disabled is set, \
             or the kernel is older than 5.8."
        );
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned, owned
    // here and closed once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
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
