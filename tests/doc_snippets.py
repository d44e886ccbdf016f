#!/usr/bin/env python3
"""Compiles every C++ block of README.md and docs/ (and runs the programs that say so), so
that no code in the documentation can stop compiling unnoticed.

Each ```cpp block must follow a marker line, an HTML comment that GitHub does not show:

    <!-- snippet: program -->              a whole program: compiled and linked with zreap
    <!-- snippet: program, run -->         the same, then run: it must exit 0 within 60 s
    <!-- snippet: fragment in SIGNATURE -->
                                           part of a function: compiled (not linked) as the
                                           body of SIGNATURE, e.g. `void f(zreap::loop& loop)`,
                                           after #include <zreap/zreap.hpp> and nothing else
    <!-- snippet: fragment in SIGNATURE; include <algorithm> <cstdio> -->
                                           the same, with these headers too

A fragment's text should say what its names are (the signature's parameters); the marker is
only what lets the test check it. A block without a marker fails the test.

Usage (tests/meson.build runs it as the meson test `doc-snippets`):
  doc_snippets.py --root SRCDIR --work DIR [--exclude FILE]... [--gtest_output=xml:PATH]
                  --compile CXX FLAGS... --link LDFLAGS...
--gtest_output writes one test case per block in GoogleTest's XML format, which
tests/summarize.py counts.
"""
import argparse
import os
import re
import subprocess
import sys
import time
from xml.sax.saxutils import escape, quoteattr

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
MARKER = re.compile(r"^<!--\s*snippet:\s*(.*?)\s*-->\s*$")
CPP = {"cpp", "c++", "cxx"}


class Block:
    def __init__(self, path, line, text, marker):
        self.path = path      # relative to the root
        self.line = line      # 1-based line of the first line of code
        self.text = text
        self.marker = marker  # the marker's text, or None
        self.name = f"{path}:{line}"


def blocks_of(root, rel):
    """Every C++ block of one markdown file, with the marker before it."""
    out = []
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(2), m.group(3).lower()
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if lang in CPP:
            marker = None
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            if k >= 0:
                mm = MARKER.match(lines[k].strip())
                if mm:
                    marker = mm.group(1)
            out.append(Block(rel, start + 1, "\n".join(lines[start:j]) + "\n", marker))
        i = j + 1
    return out


def markdown_files(root, exclude):
    files = ["README.md"]
    for dirpath, _, names in os.walk(os.path.join(root, "docs")):
        for n in names:
            if n.endswith(".md"):
                files.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(f for f in files if f not in exclude)


def parse_marker(marker):
    """('program', run) or ('fragment', signature, includes); raises ValueError."""
    parts = [p.strip() for p in marker.split(",")]
    if parts[0] == "program":
        extra = parts[1:]
        if extra not in ([], ["run"]):
            raise ValueError(f"unknown words after 'program': {', '.join(extra)}")
        return ("program", extra == ["run"])
    m = re.match(r"fragment in (.+?)(?:;\s*include\s+(.*))?$", marker)
    if m:
        includes = m.group(2).split() if m.group(2) else []
        bad = [h for h in includes if not re.fullmatch(r"<[\w./+-]+>", h)]
        if bad:
            raise ValueError(f"not a header: {' '.join(bad)}")
        return ("fragment", m.group(1).strip(), includes)
    raise ValueError(f"unknown marker '{marker}'")


def source_of(block, kind):
    """The translation unit to compile; #line keeps errors pointing into the markdown."""
    where = f'#line {block.line} "{block.path}"\n'
    if kind[0] == "program":
        return where + block.text
    _, signature, includes = kind
    head = "".join(f"#include {h}\n" for h in ["<zreap/zreap.hpp>"] + includes)
    return (f"// {block.name}: a fragment, compiled as the body of {signature}\n" + head +
            f"{signature} {{\n" + where + block.text + "}\n")


def check(block, args, work):
    """'' if the block compiles (and runs, where it says so), else what went wrong."""
    if block.marker is None:
        return ("a C++ block without a snippet marker: put <!-- snippet: program[, run] --> or "
                "<!-- snippet: fragment in SIGNATURE --> on the line before it "
                "(tests/doc_snippets.py)")
    try:
        kind = parse_marker(block.marker)
    except ValueError as e:
        return f"bad snippet marker: {e}"
    stem = re.sub(r"[^\w]+", "_", block.name)
    src = os.path.join(work, stem + ".cpp")
    with open(src, "w", encoding="utf-8") as f:
        f.write(source_of(block, kind))
    if kind[0] == "program":
        exe = os.path.join(work, stem)
        cmd = args.compile + [src, "-o", exe] + args.link
    else:
        cmd = args.compile + ["-c", src, "-o", os.path.join(work, stem + ".o")]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        return "does not compile:\n" + " ".join(cmd) + "\n" + r.stdout
    if kind[0] == "program" and kind[1]:
        try:
            r = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=60, cwd=work)
        except subprocess.TimeoutExpired:
            return "ran for more than 60 s"
        print(f"{block.name}: output:\n" + "".join("  " + l + "\n" for l in
                                                    r.stdout.splitlines()))
        if r.returncode != 0:
            return f"exited with {r.returncode}"
    return ""


def write_xml(path, results):
    failures = sum(1 for _, why, _ in results if why)
    with open(path, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        f.write(f'<testsuites tests="{len(results)}" failures="{failures}" name="doc-snippets">\n')
        f.write(f'  <testsuite name="DocSnippets" tests="{len(results)}" failures="{failures}">\n')
        for name, why, secs in results:
            f.write(f'    <testcase name={quoteattr(name)} classname="DocSnippets" '
                    f'time="{secs:.2f}" status="run" result="completed"')
            if why:
                f.write(f'>\n      <failure message={quoteattr(why.splitlines()[0])}>'
                        f'{escape(why)}</failure>\n    </testcase>\n')
            else:
                f.write(" />\n")
        f.write("  </testsuite>\n</testsuites>\n")


def main():
    # --compile and --link take everything up to the next option of ours.
    argv = sys.argv[1:]
    groups = {"--compile": [], "--link": []}
    rest, current = [], None
    for a in argv:
        if a in groups:
            current = groups[a]
        elif a.startswith("--") and a.split("=")[0] in ("--root", "--work", "--exclude",
                                                         "--gtest_output"):
            current = None
            rest.append(a)
        elif current is not None:
            current.append(a)
        else:
            rest.append(a)
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--exclude", action="append", default=[])
    p.add_argument("--gtest_output", default="")
    args = p.parse_args(rest)
    args.compile, args.link = groups["--compile"], groups["--link"]
    if not args.compile:
        p.error("--compile CXX FLAGS... is required")
    os.makedirs(args.work, exist_ok=True)

    results = []
    for rel in markdown_files(args.root, set(args.exclude)):
        for block in blocks_of(args.root, rel):
            t0 = time.monotonic()
            why = check(block, args, args.work)
            results.append((block.name, why, time.monotonic() - t0))
            print(f"{block.name}: {'FAILED: ' + why if why else 'ok'} ({block.marker})")
    for ex in args.exclude:
        print(f"{ex}: not checked (--exclude)")
    if args.gtest_output.startswith("xml:"):
        write_xml(args.gtest_output[4:], results)
    failed = sum(1 for _, why, _ in results if why)
    print(f"{len(results)} C++ blocks, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
