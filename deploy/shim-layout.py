#!/usr/bin/env python3
"""Regenerates cli/shim-layout.ld, the linker script that puts the code a shim runs first.

A shim (`rswarm shim`, one per task) runs a few hundred functions of a 15 MB text
segment; spread over it, every one costs the kernel's fault-around (64 KiB or a
whole large folio) in the shim's RSS. The linker script gathers those functions
(and the C library objects a static build runs at start-up) into one output
section in front of `.text`.

This script finds them: it links the shipped build with a link map, runs a shim
under ptrace one instruction at a time (start-up, idle wake-ups, a `status` and a
`wait` request, the task's exit), maps every executed address to its input
section, and writes one pattern per section with the hashes in symbol and file
names replaced by `*`, so the script keeps matching across rebuilds. Sections
that no longer exist simply match nothing: a stale script costs memory, not
correctness.

Needs x86_64 Linux, root or ptrace rights over a child, python3, and the default
linker (rust-lld, whose map format this reads).

    deploy/shim-layout.py              # build, trace, rewrite cli/shim-layout.ld
    deploy/shim-layout.py --bin B --map M   # use an existing binary and its map
"""

import argparse
import bisect
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "cli", "shim-layout.ld")

# Why these limits: a shim's start-up is about 150,000 instructions; a run that
# takes ten times that is stuck, not slow.
STEP_LIMIT = 5_000_000
# Idle time before the requests: the shim wakes every 2 s to reap orphans, and
# that loop must be in the trace too.
IDLE_SECONDS = 5
# Single-stepped from Python, a start-up takes some seconds; a minute means stuck.
START_SECONDS_MAX = 60

PTRACE_TRACEME = 0
PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETOPTIONS = 0x4200
PTRACE_O_EXITKILL = 0x100000

REG_NAMES = (
    "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs "
    "eflags rsp ss fs_base gs_base ds es fs gs"
).split()


class Regs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in REG_NAMES]


def build(map_path):
    """Builds the shipped binary (the `build-shipped` alias) with a link map."""
    subprocess.run(
        ["cargo", "build-shipped", "-C", f"link-arg=-Wl,-Map={map_path}"],
        cwd=ROOT,
        check=True,
    )
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "rswarm")


def write_spec(task_dir):
    spec = {
        "task_id": "layout",
        "program": "/bin/sleep",
        "arg0": "sleep",
        "args": ["600"],
        "env": ["PATH=/usr/bin:/bin"],
        "dir": "/",
        "credentials": None,
        "cgroups": [],
        "log_rotation": {"file_bytes_max": 10 * 1024 * 1024, "files_max": 3},
    }
    with open(os.path.join(task_dir, "spec.json"), "w") as f:
        json.dump(spec, f)


def exercise(task_dir, shim_pid):
    """What the runtime does to a shim: ask its status, wait for the task, stop it.
    Kills the shim when that fails, so that the trace ends."""
    try:
        talk_to(task_dir)
    except (OSError, ValueError, KeyError) as e:
        print(f"cannot drive the shim: {e}", file=sys.stderr)
        os.kill(shim_pid, signal.SIGKILL)


def talk_to(task_dir):
    sock = os.path.join(task_dir, "shim.sock")
    deadline = time.monotonic() + START_SECONDS_MAX
    while not os.path.exists(os.path.join(task_dir, "task.json")):
        if time.monotonic() > deadline:
            raise OSError("the shim did not start its task")
        time.sleep(0.1)
    time.sleep(IDLE_SECONDS)
    with socket.socket(socket.AF_UNIX) as status:
        status.connect(sock)
        status.sendall(b"status\n")
        status.recv(100)
    waiter = socket.socket(socket.AF_UNIX)
    waiter.connect(sock)
    waiter.sendall(b"wait\n")
    time.sleep(1)
    with open(os.path.join(task_dir, "task.json")) as f:
        os.kill(json.load(f)["pid"], signal.SIGTERM)
    waiter.recv(100)
    waiter.close()


def trace(binary):
    """Every 16-byte code granule a shim executes, as addresses."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    task_dir = tempfile.mkdtemp(prefix="shim-layout-")
    write_spec(task_dir)
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
        libc.ptrace(PTRACE_TRACEME, 0, None, None)
        os.kill(os.getpid(), signal.SIGSTOP)
        os.execv(binary, [binary, "shim", task_dir])
    os.waitpid(pid, 0)
    libc.ptrace(PTRACE_SETOPTIONS, pid, None, PTRACE_O_EXITKILL)
    driver = threading.Thread(target=exercise, args=(task_dir, pid), daemon=True)
    driver.start()
    regs = Regs()
    granules = set()
    deliver = 0
    for _ in range(STEP_LIMIT):
        libc.ptrace(PTRACE_SINGLESTEP, pid, None, deliver)
        deliver = 0
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            break
        if os.WSTOPSIG(status) != signal.SIGTRAP:
            deliver = os.WSTOPSIG(status)
            continue
        libc.ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(regs))
        granules.add(regs.rip & ~0xF)
    else:
        os.kill(pid, signal.SIGKILL)
        sys.exit("the shim did not finish within the step limit")
    shutil.rmtree(task_dir, ignore_errors=True)
    return granules


# lld: "     VMA      LMA     Size Align Out     In      Symbol", input sections
# indented by 9 spaces: "file:(section)".
MAP_LINE = re.compile(r"^\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s{9}(\S.*):\((\S+)\)$")


def input_sections(map_path):
    sections = []
    with open(map_path) as f:
        for line in f:
            m = MAP_LINE.match(line)
            if m and m.group(4).startswith(".text"):
                sections.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4)))
    sections.sort()
    return sections


def file_pattern(name):
    """An input file as a pattern: archive:member, hashes and versions as `*`."""
    m = re.match(r"^(.*)\((.*)\)$", name)
    if not m:
        base = os.path.basename(name)
        if base.endswith(".rcgu.o"):
            return "*/rswarm-*.rcgu.o"  # the binary crate's own objects
        return "*" + base
    archive, member = os.path.basename(m.group(1)), m.group(2)
    if archive.endswith(".rlib"):
        return "*" + re.sub(r"-[0-9a-f]+\.rlib$", "-*.rlib", archive) + ":*"
    return "*" + re.sub(r"-[0-9.]+\.a$", "-*.a", archive) + ":" + member


def section_pattern(name):
    """A section name as a pattern: legacy and v0 mangling hashes as `*`."""
    name = re.sub(r"\.llvm\.\d+$", "*", name)
    name = re.sub(r"17h[0-9a-f]{16}E", "17h*", name)
    if "._R" in name:
        name = re.sub(r"Cs[0-9a-zA-Z]+_", "Cs*_", name)
        name = re.sub(r"B[0-9a-zA-Z]*_", "B*_", name)
    name = re.sub(r"\*+", "*", name)
    # '[', ']' and '?' are glob syntax to the linker.
    return re.sub(r"[\[\]?]", "?", name)


def patterns(sections, granules):
    """Patterns for the executed code sections, and for their read-only data:
    `.rodata.<function>` of a Rust function, `.rodata*` of a C object."""
    starts = [s[0] for s in sections]
    hot = {}
    for address in granules:
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and sections[i][0] <= address < sections[i][0] + sections[i][1]:
            hot[sections[i][0]] = sections[i]
    text, data = [], []
    for start in sorted(hot):
        _, _, file, section = hot[start]
        if section == ".text.main":
            continue
        files, name = file_pattern(file), section_pattern(section)
        text.append(f"    {files}({name})")
        if name.startswith(".text."):
            data.append(f"    {files}(.rodata.{name[len('.text.'):]})")
        else:
            data.append(f"    {files}(.rodata .rodata.*)")
    return unique(text), unique(data), sum(s[1] for s in hot.values())


def unique(lines):
    """The lines in their order, each once."""
    return list(dict.fromkeys(lines))


HEADER = """\
/* The code a shim runs, first in the text segment, and its constants first in the
 * read-only data (see docs/benchmarks.md, "shim").
 *
 * Generated by deploy/shim-layout.py from a traced run; do not edit by hand, rerun it
 * after large changes to the shim or to its start-up (a stale pattern matches nothing
 * and only costs memory). Passed to the linker by cli/build.rs for the rswarm binary.
 * Patterns: input file (archive:member) and section, hashes replaced by `*`.
 */
SECTIONS
{
  .text.shim : {
    /* A static binary calls memcpy and other ifuncs through these stubs. */
    *(.iplt)
"""

MIDDLE = """\
    *(.text.main)
  }
}
INSERT BEFORE .text;

SECTIONS
{
  .rodata.shim : {
"""

FOOTER = """\
  }
}
INSERT BEFORE .rodata;
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", help="an rswarm binary linked with --map")
    parser.add_argument("--map", help="its link map (lld format)")
    args = parser.parse_args()
    if bool(args.bin) != bool(args.map):
        sys.exit("give both --bin and --map, or neither")
    if args.map:
        binary, map_path = args.bin, args.map
    else:
        map_dir = tempfile.mkdtemp(prefix="shim-layout-")
        map_path = os.path.join(map_dir, "rswarm.map")
        binary = build(map_path)
    granules = trace(binary)
    text, data, hot_bytes = patterns(input_sections(map_path), granules)
    if not args.map:
        shutil.rmtree(map_dir, ignore_errors=True)
    with open(SCRIPT, "w") as f:
        f.write(HEADER + "\n".join(text) + "\n" + MIDDLE + "\n".join(data) + "\n" + FOOTER)
    print(f"{len(text)} patterns for {hot_bytes} bytes of code written to {SCRIPT}")


if __name__ == "__main__":
    main()
