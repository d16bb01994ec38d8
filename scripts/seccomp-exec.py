#!/usr/bin/env python3
"""Runs a command under a seccomp profile in the OCI/Docker JSON format, as
a container runtime would apply it (libseccomp, the same library runc and
containerd use), so that the profile is tested here without a container.

  scripts/seccomp-exec.py PROFILE.json COMMAND [ARGS...]

Only what Squall's profile uses is supported: a defaultAction of
SCMP_ACT_ERRNO (with defaultErrnoRet) or SCMP_ACT_ALLOW, and rules that
allow names without argument filters. Names that do not exist on this
machine's architecture are skipped, as libseccomp does for a runtime.
"""
import ctypes
import ctypes.util
import json
import os
import sys

ALLOW = 0x7FFF0000


def errno_action(n):
    return 0x00050000 | (n & 0xFFFF)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    profile = json.load(open(sys.argv[1]))
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    default = profile["defaultAction"]
    if default == "SCMP_ACT_ERRNO":
        action = errno_action(profile.get("defaultErrnoRet", 1))
    elif default == "SCMP_ACT_ALLOW":
        action = ALLOW
    else:
        sys.exit(f"seccomp-exec: defaultAction {default} is not supported")
    ctx = lib.seccomp_init(action)
    if not ctx:
        sys.exit("seccomp-exec: seccomp_init failed")
    for rule in profile.get("syscalls", []):
        if rule["action"] != "SCMP_ACT_ALLOW" or rule.get("args"):
            sys.exit(f"seccomp-exec: only plain SCMP_ACT_ALLOW rules are supported: {rule}")
        for name in rule["names"]:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue  # not a system call on this architecture
            rc = lib.seccomp_rule_add(ctx, ALLOW, nr, 0)
            if rc != 0:
                sys.exit(f"seccomp-exec: cannot allow {name}: {os.strerror(-rc)}")
    rc = lib.seccomp_load(ctx)
    if rc != 0:
        sys.exit(f"seccomp-exec: seccomp_load failed: {os.strerror(-rc)}")
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
