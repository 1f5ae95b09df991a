#!/usr/bin/env python3
"""Keeps docs/tutorial.md true to the code.

- Each ```c block must follow a link to examples/NAME.c and be, verbatim, a run of lines of
  that program (which the build compiles).
- Each ```console block starts with "$ build/examples/NAME ARGS": the command is run (all at
  once: they mostly sleep) and its output, stdout and stderr together, must be the one shown,
  times aside (decimals, and the figures of joblib's progress lines), a run of equal lines
  counting once (how many progress lines a run prints depends on when its batches finish),
  and a "..." line standing for any lines.

Usage: tutorial-check.py <source dir> <build dir>
"""
import re
import subprocess
import sys

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
LINK = re.compile(r"\(\.\./examples/(\w+\.c)\)")


def shape(line):
    """The line with what varies from run to run made #: its times (decimals), and in joblib's
    progress lines every number."""
    if line.startswith("[Parallel("):
        line = re.sub(r"\d+(\.\d+)?", "#", line)
    line = re.sub(r"\d+\.\d+", "#", line)
    return re.sub(r"\s+", " ", line).strip()


def collapse(lines):
    out = []
    for line in lines:
        if not out or out[-1] != line:
            out.append(line)
    return out


def matches(expected, actual):
    """expected and actual are lists of shapes; "..." in expected matches any lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])


def check_excerpts(text, src, errors):
    count = 0
    for m in FENCE.finditer(text):
        if m.group(1) != "c":
            continue
        count += 1
        before = text[:m.start()].rstrip().split("\n")[-1]
        link = LINK.search(before)
        if not link:
            errors.append("a C block does not follow a link to its example:\n" + m.group(2))
            continue
        with open(f"{src}/examples/{link.group(1)}", encoding="utf-8") as f:
            program = f.read()
        if "\n" + m.group(2) not in "\n" + program:
            errors.append(f"this block is not in examples/{link.group(1)} any more:\n"
                          + m.group(2))
    return count


def check_commands(text, build, errors):
    runs = []
    for m in FENCE.finditer(text):
        if m.group(1) != "console":
            continue
        lines = m.group(2).rstrip("\n").split("\n")
        command = lines[0]
        if not command.startswith("$ build/examples/"):
            errors.append("a console block does not start with $ build/examples/: " + command)
            continue
        argv = command[2:].split()
        argv[0] = build + argv[0][len("build"):]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        runs.append((command, lines[1:], proc))
    for command, expected, proc in runs:
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            errors.append(f"{command}: still running after 120 s")
            continue
        actual = out.rstrip("\n").split("\n")
        if proc.returncode != 0:
            errors.append(f"{command}: exit status {proc.returncode}\n{out}")
        elif not matches(collapse(shape(l) for l in expected),
                         collapse(shape(l) for l in actual)):
            errors.append(f"{command} printed\n{out}\nwhere the tutorial shows\n"
                          + "\n".join(expected))
    return len(runs)


def main():
    src, build = sys.argv[1], sys.argv[2]
    with open(f"{src}/docs/tutorial.md", encoding="utf-8") as f:
        text = f.read()
    errors = []
    excerpts = check_excerpts(text, src, errors)
    commands = check_commands(text, build, errors)
    if excerpts < 6 or commands < 6:
        errors.append(f"only {excerpts} C excerpts and {commands} commands: the tutorial has "
                      "six steps")
    for e in errors:
        print(e, file=sys.stderr)
    if not errors:
        print(f"tutorial: {excerpts} excerpts in their programs, {commands} outputs as shown")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
