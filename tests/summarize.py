#!/usr/bin/env python3
"""Counts test cases across meson build directories and prints one closing line:
'N passed, N failed' (', N skipped' when some were).

Each meson test that wrote a GoogleTest XML report contributes its test cases; a meson
test without a report (a crash before the report, or a non-gtest test) counts as one case.
A meson test that failed although its report shows no failure (a sanitizer report at exit,
a timeout) counts as one more failure, so nothing red is ever hidden.
"""
import glob
import json
import os
import re
import sys
import xml.etree.ElementTree as ET


def gtest_counts(path):
    # Counted case by case: GoogleTest 1.12 puts no "skipped" total on the root element, so
    # a GTEST_SKIP would otherwise count as passed.
    root = ET.parse(path).getroot()
    passed = failed = skipped = 0
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.get("result") == "skipped" or case.find("skipped") is not None \
                or case.get("status") == "notrun":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main(build_dirs):
    passed = failed = skipped = 0
    for bd in build_dirs:
        # testlog.json, and one more per `meson test --logbase testlog-NAME` run (valgrind).
        logs = sorted(glob.glob(os.path.join(bd, "meson-logs", "testlog*.json")))
        if not logs:
            print(f"summarize: no test log in {bd}", file=sys.stderr)
            failed += 1
            continue
        for log in logs:
            p, fl, s = count_log(log)
            passed += p
            failed += fl
            skipped += s
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 1 if failed else 0


def count_log(log):
    """(passed, failed, skipped) of one meson test log."""
    passed = failed = skipped = 0
    with open(log) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            result = t.get("result", "")
            cmd = " ".join(t.get("command", []))
            m = re.search(r"--gtest_output=xml:(\S+)", cmd)
            xml = m.group(1) if m else None
            if xml and os.path.exists(xml):
                p, fl, s = gtest_counts(xml)
                passed += p
                failed += fl
                skipped += s
                if result not in ("OK", "SKIP") and fl == 0:
                    failed += 1
                os.remove(xml)  # a stale report must not count in a later run
            elif result == "OK":
                passed += 1
            elif result == "SKIP":
                skipped += 1
            else:
                failed += 1
    return passed, failed, skipped


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["build"]))
