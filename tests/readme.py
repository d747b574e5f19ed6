#!/usr/bin/env python3
"""Runs the shell examples of README.md, in order, as a reader would, and fails on the first one
that does not do what the README says.

    python3 tests/readme.py [--bin DIR]

DIR holds the built `tablecast` and `examples/origin` (default: $CARGO_TARGET_DIR/debug or
target/debug): `cargo run --release -- ARGS` and `cargo run --release --example origin` in the
README run those binaries, the same programs without a second build. The examples use the
default ports, so 9926, 1883 and 9930 must be free; the server gets a new data directory.

Sections run: Quick start, REST, Queries, Real-time and GraphQL (in that order, as a newcomer
follows them); the
Security and Running several nodes examples need another server set-up and are left out.
`cargo test` is skipped (it is the suite that runs this). Each command must exit 0 and every
HTTP answer must be 2xx, unless the command's comment starts with the status it expects
(`# 412 ...`). On a `curl -i`, a comment of the form `# Header-Name: value` must match a header
of the answer: exactly the first time a URL is read, integers within 1 on later reads of it (a
clock may tick between two requests). A listing that answers `[]`
fails unless its comment says `[]`: an example should show what it claims. A command that
streams (`curl -N`, `mosquitto_sub`) runs for two seconds and must print something; one that
ends in `&` runs in the background, as does the quick start's server, and the next command
waits for its "listening" line.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid

SECTIONS = ["Quick start", "REST", "Queries", "Real-time", "GraphQL"]
STATUS = "@@status"


def blocks(readme, sections):
    """The ```sh blocks of the named `## ` sections, as lists of commands in order."""
    out, section, in_block, lines = [], None, False, []
    for line in readme.splitlines():
        if not in_block and line.startswith("## "):
            section = line[3:].strip()
        elif line.strip() == "```sh" and section in sections:
            in_block, lines = True, []
        elif in_block and line.strip() == "```":
            in_block = False
            out.append((section, commands(lines)))
        elif in_block and line.startswith("```"):
            sys.exit(f"README.md: a code block in {section!r} is not closed on a line of its own: {line!r}")
        elif in_block:
            lines.append(line)
    return sorted(out, key=lambda b: sections.index(b[0]))


def commands(lines):
    """Joins continuation lines; splits each command from its trailing comment."""
    joined, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    out = []
    for line in joined:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        code, comment = split_comment(line)
        out.append((code.strip(), comment))
    return out


def split_comment(line):
    """The command and its comment: a `#` outside quotes, after whitespace."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and i > 0 and line[i - 1] in " \t":
            return line[:i], line[i + 1 :].strip()
    return line, ""


def numbers_close(expected, actual, slack):
    """`expected` occurs in `actual`, integers allowed to differ by `slack`."""
    pattern = r"(-?\d+)".join(re.escape(part) for part in re.split(r"-?\d+", expected))
    wanted = [int(n) for n in re.findall(r"-?\d+", expected)]
    for match in re.finditer(pattern, actual):
        if all(abs(int(g) - w) <= slack for g, w in zip(match.groups(), wanted)):
            return True
    return False


class Shell:
    """One bash process, so variables set by one example are there for the next."""

    def __init__(self, env):
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        # Every curl reports its status on a line of its own after its output.
        self.run(f"curl() {{ command curl -w '\\n{STATUS} %{{http_code}}\\n' \"$@\"; }}")

    def run(self, code):
        marker = f"@@done-{uuid.uuid4().hex}"
        self.proc.stdin.write(f"{code}\n__rc=$?; echo; echo {marker} $__rc\n")
        self.proc.stdin.flush()
        out = []
        for line in self.proc.stdout:
            if line.startswith(marker):
                return "".join(out), int(line.split()[1])
            out.append(line)
        raise RuntimeError("the shell ended")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def check(code, comment, out, rc, slack):
    """None if the example did what it says, else why not; integers in a claimed header may
    differ by `slack`."""
    streams = " -N " in f" {code} " or code.startswith("mosquitto_sub")
    if streams:
        return None if rc == 124 and out.strip() else f"printed nothing (exit {rc})"
    if rc != 0:
        return f"exit status {rc}"
    statuses = [int(s) for s in re.findall(rf"^{STATUS} (\d+)$", out, re.M)]
    expected = re.match(r"(\d{3})\b", comment)
    for status in statuses:
        if expected and status != int(expected.group(1)):
            return f"HTTP {status}, the comment says {expected.group(1)}"
        if not expected and not 200 <= status < 300:
            return f"HTTP {status}"
    header = re.match(r"([A-Za-z][A-Za-z-]*): (.+)", comment)
    shows_headers = re.search(r"(^| )-[a-zA-Z]*[iI]", code)
    if header and shows_headers:
        name, value = header.groups()
        lines = [l for l in out.splitlines() if l.lower().startswith(name.lower() + ":")]
        if not any(numbers_close(value, l.split(":", 1)[1].strip(), slack) for l in lines):
            return f"no `{name}: {value}` header: {lines}"
    body = re.sub(rf"\n?{STATUS} \d+\s*$", "", out).strip()
    if body.endswith("\n[]") or body == "[]":
        if "[]" not in comment:
            return "an empty listing: the example shows nothing"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--bin", default=os.path.join(target, "debug"))
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    binaries = os.path.abspath(args.bin)
    server = os.path.join(binaries, "tablecast")
    origin = os.path.join(binaries, "examples", "origin")
    for binary in (server, origin):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} is not built (cargo build --examples)")

    with open("README.md") as f:
        readme = f.read()
    work = tempfile.mkdtemp(prefix="tablecast-readme-")
    env = dict(os.environ, TABLECAST_DATA=os.path.join(work, "data"))
    shell = Shell(env)
    failures, ran, background, claimed = [], 0, [], set()
    try:
        for section, cmds in blocks(readme, SECTIONS):
            for code, comment in cmds:
                if code == "cargo test":
                    continue
                runnable = code.replace("cargo run --release --example origin", shlex.quote(origin))
                runnable = runnable.replace("cargo run --release --", shlex.quote(server))
                # The server of the quick start runs in a terminal of its own.
                if code.startswith("cargo run --release -- serve"):
                    runnable += " &"
                if runnable.endswith("&"):
                    log = os.path.join(work, f"background-{len(background)}.log")
                    out, _ = shell.run(f"{runnable[:-1]} > {log} 2>&1 &\necho $!")
                    pid = out.split()[0]
                    background.append(pid)
                    wait_listening(code, log, pid)
                    print(f"ok   [{section}] {code}  (in the background)")
                    continue
                if " -N " in f" {code} " or code.startswith("mosquitto_sub"):
                    runnable = f"timeout 2 {runnable}"
                out, rc = shell.run(runnable)
                ran += 1
                # A later claim about the same URL may see a clock that ticked since the first.
                url = re.findall(r"localhost:\d+\S*", code)
                slack = 1 if url and url[0] in claimed else 0
                claimed.update(url)
                problem = check(code, comment, out, rc, slack)
                if problem:
                    failures.append(f"[{section}] {code}\n     {problem}\n{indent(out)}")
                    print(f"FAIL [{section}] {code}: {problem}")
                else:
                    print(f"ok   [{section}] {code}")
    finally:
        pids = " ".join(background)
        if pids:
            shell.run(f"kill {pids} 2>/dev/null; wait {pids}")
        shell.close()
    if failures:
        print(f"\n{len(failures)} of {ran} README examples failed:\n")
        print("\n\n".join(failures))
        sys.exit(1)
    print(f"all {ran} README examples did what they say")


def wait_listening(code, log, pid):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        # The shell may not have opened the log yet.
        text = open(log).read() if os.path.exists(log) else ""
        if "listening" in text:
            return
        if not alive(pid):
            sys.exit(f"`{code}` ended before it was listening:\n{text}")
        time.sleep(0.05)
    sys.exit(f"`{code}` printed no listening line in 300 s:\n{open(log).read()}")


def alive(pid):
    """Whether process `pid` runs (a child that ended and was not reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def indent(text):
    return "\n".join("     | " + l for l in text.strip().splitlines()[-30:])


if __name__ == "__main__":
    main()
