#!/usr/bin/env python3
"""The dependency directions of src/, checked (README, Layout).

1. The dispatcher, progress, configuration (all of src/core/) and the in-process backends
   (sequential.c, threading.c) include nothing of the process layer (src/process/).
2. The process layer (src/process/ and the fork and spawn backends) calls nothing of the
   dispatcher but the backend interface (pj_batch_done), the batch accessors (pj_batch_*) and
   pj_cpu_count:
   no function defined non-static in the dispatcher's files, and none of its types.
3. A private header of src/core/ (dispatch.h, task.h) is included only by the files it serves.

Usage: layers.py SRC_DIR.  Prints each violation; exits 1 if there is any."""
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
core, process, backends = (os.path.join(src, d) for d in ("core", "process", "backends"))

# The dispatcher's files: batching and ordering, progress, configuration and its parsers.
DISPATCHER = ["dispatch.c", "dispatch_take.c", "dispatch_loop.c", "dispatch_yield.c",
              "dispatch_watchdog.c", "progress.c", "bar.c", "parallel.c", "pre_dispatch.c",
              "cpus.c", "registry.c", "executor.c", "futures.c"]
# What a backend may call of the dispatcher: the backend interface and the batch accessors, and
# pj_cpu_count (public, a question about the machine that holds no dispatcher state: an mpi
# worker rank reports its CPUs with it).
ALLOWED = re.compile(r"^(pj_batch_\w+|pj_batch_done|pj_cpu_count)$")
# The dispatcher's types, which a backend never sees.
FORBIDDEN_TYPES = ["pj_iter", "pj_parallel", "pj_results", "struct pj__source",
                   "struct pj__progress", "struct run_batch", "struct pj__dispatch"]
IN_PROCESS_BACKENDS = ["sequential.c", "threading.c"]


def code_of(path):
    """The file without comments and string literals, so a mention in prose is not a use."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)


def includes(path):
    return re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', open(path, encoding="utf-8").read(),
                      flags=re.M)


def c_files(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith((".c", ".h")))


if not os.path.exists(os.path.join(process, "process.h")):
    print("layers: src/process/process.h is missing: the process layer has no folder and header")
    sys.exit(1)
process_headers = {f for f in os.listdir(process) if f.endswith(".h")}
problems = []

for path in c_files(core) + [os.path.join(backends, f) for f in IN_PROCESS_BACKENDS]:
    for inc in includes(path):
        if os.path.basename(inc) in process_headers or "process/" in inc:
            problems.append(f"{os.path.relpath(path, src)} includes {inc} of the process layer")

dispatcher_functions = set()
for name in DISPATCHER:
    path = os.path.join(core, name)
    if not os.path.exists(path):
        problems.append(f"src/core/{name} is missing: the list of dispatcher files is stale")
        continue
    for m in re.finditer(r"^(?!static\b)[A-Za-z_][\w \t\*]*?\b(pj_?_?\w+)\s*\(", code_of(path),
                         flags=re.M):
        if not ALLOWED.match(m.group(1)):
            dispatcher_functions.add(m.group(1))
if len(dispatcher_functions) < 10:
    problems.append(f"only {len(dispatcher_functions)} dispatcher functions found: parser broken")

process_side = c_files(process) + [os.path.join(backends, f) for f in ("fork.c", "spawn.c", "mpi.c")]
for path in process_side:
    code = code_of(path)
    rel = os.path.relpath(path, src)
    for fn in sorted(dispatcher_functions):
        if re.search(r"\b%s\s*\(" % re.escape(fn), code):
            problems.append(f"{rel} calls {fn}() of the dispatcher")
    for ty in FORBIDDEN_TYPES:
        if re.search(r"\b%s\b" % re.escape(ty).replace(r"\ ", r"\s+"), code):
            problems.append(f"{rel} uses {ty}, the dispatcher's own type")

# Private headers of one part of src/core/ (issue 11's split): only that part includes them.
PRIVATE_HEADERS = {"dispatch.h": ["dispatch.c", "dispatch_take.c", "dispatch_loop.c",
                                  "dispatch_yield.c", "dispatch_watchdog.c"],
                   "task.h": ["task.c", "fn.c"]}
everything = c_files(core) + c_files(process) + c_files(backends)
for header, users in PRIVATE_HEADERS.items():
    for path in everything:
        if os.path.basename(path) not in users and any(
                os.path.basename(inc) == header for inc in includes(path)):
            problems.append(f"{os.path.relpath(path, src)} includes {header}, private to "
                            f"{', '.join(users)}")

for p in problems:
    print("layers:", p)
print(f"layers: {len(dispatcher_functions)} dispatcher functions, {len(process_side)} process-side "
      f"files checked: {'FAIL' if problems else 'ok'}")
sys.exit(1 if problems else 0)
