#!/usr/bin/env python3
"""Counts every test run from meson's JSON test logs and fuzz results.

A Check suite counts each of its checks (its "Checks: N, Failures: F, Errors: E" line), a
Python unittest run each of its tests ("Ran N tests" and its OK/FAILED line); any other test
counts once. Prints one line per failure and then "N passed, N failed, N skipped".
"""
import json
import re
import sys

CHECKS = re.compile(r"Checks: (\d+), Failures: (\d+), Errors: (\d+)")
UNITTEST = re.compile(r"^Ran (\d+) tests? in .*\n\n(OK|FAILED)(?: \(([^)]*)\))?$", re.M)


def unittest_counts(out):
    """(ran, failed, skipped) from unittest's summary, or None."""
    m = UNITTEST.search(out)
    if not m:
        return None
    extra = dict(kv.split("=") for kv in (m.group(3) or "").split(", ") if "=" in kv)
    bad = int(extra.get("failures", 0)) + int(extra.get("errors", 0)) + \
        int(extra.get("unexpected successes", 0))
    return int(m.group(1)), bad, int(extra.get("skipped", 0))
passed = failed = skipped = 0

for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        print(f"missing log {path}: counted as a failure")
        failed += 1
        continue
    for line in lines:
        if not line.strip():
            continue
        t = json.loads(line)
        label = f"{path}: {t['name']}"
        result = t["result"]
        m = CHECKS.search(t.get("stdout", "") or "")
        u = unittest_counts((t.get("stdout") or "") + (t.get("stderr") or ""))
        if result == "SKIP":
            skipped += 1
        elif u and not m:
            n, f, s = u
            passed += n - f - s
            failed += f
            skipped += s
            if f or result not in ("OK", "EXPECTEDFAIL"):
                print(f"FAILED: {label} ({f} of {n} tests)")
                if f == 0:
                    failed += 1
        elif m:
            n, f, e = (int(x) for x in m.groups())
            passed += n - f - e
            failed += f + e
            if f + e or result not in ("OK", "EXPECTEDFAIL"):
                print(f"FAILED: {label} ({f + e} of {n} checks)")
                if f + e == 0:
                    failed += 1
        elif result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        else:
            print(f"FAILED: {label} ({result})")
            failed += 1

print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
