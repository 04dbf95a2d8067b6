#!/usr/bin/env python3
"""Regenerates cli/shim-layout.ld, the linker script that puts the code a shim runs first.

A shim (`rswarm shim`, one per task) runs a few hundred functions of a 15 MB text
segment; spread over it, every one costs the kernel's fault-around (64 KiB or a
whole large folio) in the shim's RSS. The linker script gathers those functions
(and the C library objects a static build runs at start-up) into one output
section in front of `.text`.

This script finds them: it links the shipped build with a link map, runs two
shims under ptrace one instruction at a time, one for a process task and one for
a container (runc creates and starts it, the shim adopts its init, then runs
`runc delete`): start-up, idle wake-ups, a `status` and a `wait` request, the
task's stop and exit. It maps every executed address to its input section and
writes one pattern per section, the code both shims run first and then each
one's own, with crate hashes and LLVM suffixes replaced by `*` so the script
keeps matching across rebuilds (a legacy symbol's own hash stays: it tells a
generic function's instances apart). The read-only data the executed
instructions address directly goes first in `.rodata` the same way. Sections
that no longer exist simply match nothing: a stale script costs memory, not
correctness.

Needs x86_64 Linux, root (runc, cgroups) and ptrace rights over a child, python3,
runc, a static busybox (the container's `sleep`), and the default linker
(rust-lld, whose map format this reads).

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
PTRACE_PEEKTEXT = 1
PTRACE_PEEKDATA = 2
PTRACE_POKETEXT = 4
PTRACE_CONT = 7
PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_O_TRACEVFORK = 0x04
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_EXITKILL = 0x100000
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_EXEC = 4
WALL = 0x40000000

# Functions run at full speed rather than one step at a time, each counted as
# executed whole: the start-up's relocation of a position-independent binary is
# a loop over every relocation, millions of steps that say nothing new. It also
# calls every ifunc resolver (IRELATIVE relocations), which are counted whole too.
FAST_FORWARD = ("_dl_relocate_static_pie",)

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


def process_spec(task_dir):
    """A process task: the shim forks and execs `sleep` itself."""
    return {
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


def container_spec(task_dir):
    """A container task, laid out as the oci driver does: the task directory is
    the bundle, its root a static busybox running `sleep`, its cgroups runc's."""
    runc = shutil.which("runc")
    busybox = shutil.which("busybox")
    if not runc or not busybox:
        sys.exit("needs runc and a static busybox: apt-get install runc busybox-static")
    rootfs = os.path.join(task_dir, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy(busybox, os.path.join(rootfs, "bin", "sleep"))
    subprocess.run([runc, "spec"], cwd=task_dir, check=True)
    with open(os.path.join(task_dir, "config.json")) as f:
        config = json.load(f)
    container_id = f"shim-layout-{os.getpid()}"
    config["root"] = {"path": rootfs, "readonly": True}
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/sleep", "600"]
    config["linux"]["cgroupsPath"] = f"/{container_id}"
    with open(os.path.join(task_dir, "config.json"), "w") as f:
        json.dump(config, f)
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    memory = "/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory"
    spec = process_spec(task_dir)
    spec["container"] = {
        "runc": runc,
        "root": os.path.join(task_dir, "runc-root"),
        "bundle": task_dir,
        "id": container_id,
        "memory_cgroup": {"dir": os.path.join(memory, container_id), "v2": v2},
    }
    return spec


def stop_by_signal(sock, pid):
    """A process task ends on SIGTERM."""
    os.kill(pid, signal.SIGTERM)


def stop_by_request(sock, pid):
    """A container's init ignores SIGTERM (it is PID 1 of its namespace and
    `sleep` has no handler): the runtime's stop request escalates to SIGKILL."""
    with socket.socket(socket.AF_UNIX) as stopper:
        stopper.connect(sock)
        stopper.sendall(b"stop 15 500\n")
        stopper.recv(100)


# What is traced: how to describe the task, and how to end it.
MODES = {
    "process": (process_spec, stop_by_signal),
    "container": (container_spec, stop_by_request),
}


def exercise(task_dir, shim_pid, stop):
    """What the runtime does to a shim: ask its status, wait for the task, stop it.
    Kills the shim when that fails, so that the trace ends."""
    try:
        talk_to(task_dir, stop)
    except (OSError, ValueError, KeyError) as e:
        print(f"cannot drive the shim: {e}", file=sys.stderr)
        os.kill(shim_pid, signal.SIGKILL)


def talk_to(task_dir, stop):
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
        stop(sock, json.load(f)["pid"])
    waiter.recv(100)
    waiter.close()


def trace(binary, mode):
    """Every 16-byte code granule a shim executes, as link-time addresses. Only
    the shim is traced: runc, its children and the task run untraced."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    fast_forward = function_ranges(binary, FAST_FORWARD)
    resolvers = ifunc_resolver_granules(binary)
    describe, stop = MODES[mode]
    task_dir = tempfile.mkdtemp(prefix="shim-layout-")
    with open(os.path.join(task_dir, "spec.json"), "w") as f:
        json.dump(describe(task_dir), f)
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
        libc.ptrace(PTRACE_TRACEME, 0, None, None)
        os.kill(os.getpid(), signal.SIGSTOP)
        os.execv(binary, [binary, "shim", task_dir])
    os.waitpid(pid, 0)
    libc.ptrace(PTRACE_SETOPTIONS, pid, None, PTRACE_O_EXITKILL | PTRACE_O_TRACEEXEC | PTRACE_O_TRACEVFORK)
    # Up to the exec untraced: the Python child's steps are not the shim's.
    libc.ptrace(PTRACE_CONT, pid, None, 0)
    _, status = os.waitpid(pid, 0)
    if status >> 8 != signal.SIGTRAP | (PTRACE_EVENT_EXEC << 8):
        os.kill(pid, signal.SIGKILL)
        sys.exit(f"the {mode} shim did not reach its exec (wait status {status:#x})")
    base = load_base(pid, binary)
    driver = threading.Thread(target=exercise, args=(task_dir, pid, stop), daemon=True)
    driver.start()
    regs = Regs()
    granules = set()
    for status in steps(libc, pid):
        if status >> 8 == signal.SIGTRAP | (PTRACE_EVENT_VFORK << 8):
            granules |= trace_until_exec(libc, event_message(libc, pid), base)
            continue
        libc.ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(regs))
        address = regs.rip - base
        granules.add(address & ~0xF)
        size = fast_forward.get(address)
        if size is not None:
            granules.update(range(address & ~0xF, address + size, 16))
            granules |= resolvers
            run_to_return(libc, pid, regs)
    shutil.rmtree(task_dir, ignore_errors=True)
    print(f"{mode} shim: {len(granules)} code granules executed")
    return granules


def trace_until_exec(libc, child, base):
    """The granules a vfork child (posix_spawn's, for runc) runs in the shim's
    memory before its exec: they are the shim's pages too."""
    os.waitpid(child, WALL)  # its first stop, once attached
    regs = Regs()
    granules = set()
    for status in steps(libc, child):
        if status >> 8 == signal.SIGTRAP | (PTRACE_EVENT_EXEC << 8):
            libc.ptrace(PTRACE_DETACH, child, None, 0)
            break
        libc.ptrace(PTRACE_GETREGS, child, None, ctypes.byref(regs))
        granules.add((regs.rip - base) & ~0xF)
    return granules


def steps(libc, pid):
    """Single-steps `pid` and yields its wait status at every trap (a step
    or a ptrace event) until it exits; other signals are passed on."""
    deliver = 0
    for _ in range(STEP_LIMIT):
        libc.ptrace(PTRACE_SINGLESTEP, pid, None, deliver)
        deliver = 0
        _, status = os.waitpid(pid, WALL)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return
        if os.WSTOPSIG(status) != signal.SIGTRAP:
            deliver = os.WSTOPSIG(status)
            continue
        yield status
    os.kill(pid, signal.SIGKILL)
    sys.exit(f"process {pid} did not finish within the step limit of the trace")


def event_message(libc, pid):
    """The pid of the child a vfork event is about."""
    message = ctypes.c_ulong()
    libc.ptrace(PTRACE_GETEVENTMSG, pid, None, ctypes.byref(message))
    return message.value


def function_ranges(binary, names):
    """Link-time address -> size of the named functions (`nm -S`)."""
    out = subprocess.run(
        ["nm", "-S", "--defined-only", binary], check=True, capture_output=True, text=True
    ).stdout
    ranges, found = {}, set()
    for fields in (line.split() for line in out.splitlines()):
        if len(fields) == 4 and fields[3] in names:
            ranges[int(fields[0], 16)] = int(fields[1], 16)
            found.add(fields[3])
    for name in sorted(set(names) - found):
        print(f"{name} is not in the binary: traced step by step")
    return ranges


def ifunc_resolver_granules(binary):
    """The code of every ifunc resolver, which the relocation at start-up runs."""
    relocations = subprocess.run(
        ["readelf", "-rW", binary], check=True, capture_output=True, text=True
    ).stdout
    targets = [
        int(line.split()[-1], 16) for line in relocations.splitlines() if "R_X86_64_IRELATIVE" in line
    ]
    symbols = subprocess.run(
        ["nm", "-S", "--defined-only", binary], check=True, capture_output=True, text=True
    ).stdout
    functions = sorted(
        (int(f[0], 16), int(f[1], 16))
        for f in (line.split() for line in symbols.splitlines())
        if len(f) == 4 and f[2] in "tT"
    )
    starts = [start for start, _ in functions]
    granules = set()
    for target in targets:
        start, size = functions[max(bisect.bisect_right(starts, target) - 1, 0)]
        if start <= target < start + size:
            granules.update(range(start & ~0xF, start + size, 16))
    return granules


def load_base(pid, binary):
    """Where the kernel mapped the (position-independent) binary."""
    real = os.path.realpath(binary)
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == real and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
    sys.exit(f"{real} is not mapped in the traced shim")


def run_to_return(libc, pid, regs):
    """At a function's first instruction: lets it run to its return address
    at full speed, through a breakpoint there."""
    libc.ptrace.restype = ctypes.c_long
    ret = ctypes.c_ulong(libc.ptrace(PTRACE_PEEKDATA, pid, regs.rsp, None)).value
    original = ctypes.c_ulong(libc.ptrace(PTRACE_PEEKTEXT, pid, ret, None)).value
    libc.ptrace(PTRACE_POKETEXT, pid, ret, (original & ~0xFF) | 0xCC)
    libc.ptrace(PTRACE_CONT, pid, None, 0)
    _, status = os.waitpid(pid, 0)
    libc.ptrace(PTRACE_POKETEXT, pid, ret, original)
    if not os.WIFSTOPPED(status) or os.WSTOPSIG(status) != signal.SIGTRAP:
        os.kill(pid, signal.SIGKILL)
        sys.exit(f"the shim did not come back from a fast-forwarded function ({status:#x})")
    libc.ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(regs))
    regs.rip = ret
    libc.ptrace(PTRACE_SETREGS, pid, None, ctypes.byref(regs))


# lld: "     VMA      LMA     Size Align Out     In      Symbol", input sections
# indented by 9 spaces: "file:(section)".
MAP_LINE = re.compile(r"^\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s{9}(\S.*):\((\S+)\)$")


def input_sections(map_path, prefix):
    """(address, size, file, section) of the input sections whose name starts
    with `prefix`, by address."""
    sections = []
    with open(map_path) as f:
        for line in f:
            m = MAP_LINE.match(line)
            if m and m.group(4).startswith(prefix):
                sections.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4)))
    sections.sort()
    return sections


def containing(sections, starts, address):
    """The section that holds `address`, or None."""
    i = bisect.bisect_right(starts, address) - 1
    if i >= 0 and sections[i][0] <= address < sections[i][0] + sections[i][1]:
        return sections[i]
    return None


# objdump's note on an operand it resolved: "# 2e35a8 <symbol+0x10>".
OPERAND_TARGET = re.compile(r"^\s*([0-9a-f]+):.*#\s+([0-9a-f]+)\s+<")


def referenced_data(binary, hot, granules, rodata):
    """The read-only data sections that executed instructions address
    directly (RIP-relative operands), in order of first reference. Data
    reached only through pointers is not seen; the linker's merged string
    sections cannot be named and are left where they are."""
    starts = [s[0] for s in rodata]
    found = {}
    for start, size, _, _ in hot:
        listing = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
             f"--stop-address={start + size:#x}", binary],
            check=True, capture_output=True, text=True,
        ).stdout
        for line in listing.splitlines():
            m = OPERAND_TARGET.match(line)
            if not m or int(m.group(1), 16) & ~0xF not in granules:
                continue
            section = containing(rodata, starts, int(m.group(2), 16))
            if section and section[2] != "<internal>":
                found.setdefault(section[0], section)
    return list(found.values())


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
    """A section name as a pattern: the `.llvm.<n>` suffix of a promoted local
    symbol and the crate hashes of a v0 name as `*`. A legacy name keeps its
    `17h<hash>E`: it is all that tells a generic function's instances apart,
    and as `*` it would gather every instance, most of them never run."""
    name = re.sub(r"\.llvm\.\d+$", "*", name)
    if "._R" in name:
        name = re.sub(r"Cs[0-9a-zA-Z]+_", "Cs*_", name)
        name = re.sub(r"B[0-9a-zA-Z]*_", "B*_", name)
    name = re.sub(r"\*+", "*", name)
    # '[', ']' and '?' are glob syntax to the linker.
    return re.sub(r"[\[\]?]", "?", name)


def patterns(binary, text_sections, rodata, traces):
    """Patterns for the executed code sections, and for their read-only data:
    `.rodata.<function>` of a Rust function, `.rodata*` of a C object, and
    the data sections the executed code addresses directly. Code every mode
    runs comes first, then each mode's own, so that one mode's shim does not
    fault in the pages of another mode's code."""
    starts = [s[0] for s in text_sections]
    hot_in = {}
    for mode, granules in traces.items():
        for address in granules:
            section = containing(text_sections, starts, address)
            if section:
                hot_in.setdefault(section, set()).add(mode)
    everywhere = set(traces)
    groups = [sorted(s for s, modes in hot_in.items() if modes == everywhere)]
    for mode in traces:
        groups.append(sorted(s for s, modes in hot_in.items() if modes == {mode}))
    all_granules = set().union(*traces.values())
    text, data = [], []
    for group in groups:
        for _, _, file, section in group:
            if section == ".text.main":
                continue
            files, name = file_pattern(file), section_pattern(section)
            text.append(f"    {files}({name})")
            if name.startswith(".text."):
                data.append(f"    {files}(.rodata.{name[len('.text.'):]})")
            else:
                data.append(f"    {files}(.rodata .rodata.*)")
        for _, _, file, section in referenced_data(binary, group, all_granules, rodata):
            data.append(f"    {file_pattern(file)}({section_pattern(section)})")
    return unique(text), unique(data), sum(s[1] for s in hot_in)


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
    traces = {mode: trace(binary, mode) for mode in MODES}
    text_sections = input_sections(map_path, ".text")
    rodata = input_sections(map_path, ".rodata")
    text, data, hot_bytes = patterns(binary, text_sections, rodata, traces)
    if not args.map:
        shutil.rmtree(map_dir, ignore_errors=True)
    with open(SCRIPT, "w") as f:
        f.write(HEADER + "\n".join(text) + "\n" + MIDDLE + "\n".join(data) + "\n" + FOOTER)
    print(f"{len(text)} patterns for {hot_bytes} bytes of code written to {SCRIPT}")


if __name__ == "__main__":
    main()
