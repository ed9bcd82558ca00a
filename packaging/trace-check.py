#!/usr/bin/env python3
"""Reads `strace -f -y -s 256 -o FILE` of the agent's measured run
(packaging/measure-caps.sh) and prints, one per line:

  call NAME        every system call made (for the SystemCallFilter check)
  write PATH       every path opened for writing, created, removed or renamed
                   (for the ProtectSystem=strict check)

Only calls that succeeded count as writes: a refused one changes nothing.
"""
import re
import sys

CALL = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)(?:\(| resumed>)")
# A path argument: a quoted string, optionally after a dirfd shown by -y.
ARG = re.compile(r'(?:(?:-?\d+|AT_FDCWD)<([^>]*)>|AT_FDCWD|-?\d+), "((?:[^"\\]|\\.)*)"')
FIRST = re.compile(r'^\d+\s+[a-z_0-9]+\("((?:[^"\\]|\\.)*)"')
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
PATH_CALLS = {
    "mkdir", "rmdir", "unlink", "rename", "creat", "truncate", "chmod", "chown",
    "link", "symlink", "mknod",
}
AT_CALLS = {
    "mkdirat", "unlinkat", "renameat", "renameat2", "fchmodat", "fchownat",
    "linkat", "symlinkat", "mknodat",
}


def paths(line, name):
    if name in PATH_CALLS or (name == "open" and any(f in line for f in WRITE_FLAGS)):
        m = FIRST.match(line)
        if m:
            yield m.group(1)
        # rename/link/symlink: the second path too.
        for m in re.finditer(r', "((?:[^"\\]|\\.)*)"', line):
            yield m.group(1)
        return
    if name in AT_CALLS or (name in ("openat", "openat2") and any(f in line for f in WRITE_FLAGS)):
        for m in ARG.finditer(line):
            base, rel = m.group(1), m.group(2)
            if rel.startswith("/") or base is None:
                yield rel
            else:
                yield base.rstrip("/") + "/" + rel


def main():
    calls = set()
    writes = set()
    pending = {}
    for line in open(sys.argv[1], errors="replace"):
        m = CALL.match(line)
        if not m:
            continue
        name = m.group(1)
        calls.add(name)
        pid = line.split()[0]
        # A call another thread interrupted: its two halves joined.
        if line.rstrip().endswith("<unfinished ...>"):
            pending[pid] = line.rstrip()[: -len("<unfinished ...>")]
            continue
        if "resumed>" in line:
            head = pending.pop(pid, None)
            if head is None:
                continue
            line = head + line.split("resumed>", 1)[1]
        if re.search(r"\) = -1 ", line):
            continue
        for p in paths(line, name):
            writes.add(p)
    for c in sorted(calls):
        print("call", c)
    for w in sorted(writes):
        print("write", w)


main()
