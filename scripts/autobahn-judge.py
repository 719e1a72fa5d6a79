#!/usr/bin/env python3
"""Judges an Autobahn|Testsuite fuzzingclient report.

usage: autobahn-judge.py INDEX_JSON

A case passes when both its behavior and its close behavior are OK, NON-STRICT, INFORMATIONAL or
UNIMPLEMENTED. Prints each failing case with its details, then a summary line; exits 1 when a case
failed or when the report holds no case at all (wstest writes an empty report when it reached no server).
"""
import json
import os
import sys
from collections import Counter

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}


def case_order(case_id):
    return [int(part) for part in case_id.split(".")]


def load_cases(index_path):
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"autobahn: no usable report at {index_path} ({e}); did the suite reach the server?")
    if len(index) != 1:
        sys.exit(f"autobahn: {index_path} holds {len(index)} agents, expected 1; did the suite reach the server?")
    cases = next(iter(index.values()))
    if not cases:
        sys.exit(f"autobahn: {index_path} records no case; did the suite reach the server?")
    return cases


def case_details(report_dir, verdict):
    """The suite's own explanation of a case, from its per-case report file."""
    name = verdict.get("reportfile")
    if not name:
        return {}
    try:
        with open(os.path.join(report_dir, name)) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def print_failure(case_id, verdict, report_dir):
    print(
        f"FAIL {case_id}: behavior={verdict['behavior']} close={verdict['behaviorClose']}"
        f" remoteCloseCode={verdict.get('remoteCloseCode')} duration={verdict.get('duration')}ms"
    )
    details = case_details(report_dir, verdict)
    for key in ("description", "expectation", "result", "resultClose"):
        text = " ".join(str(details.get(key, "")).split())
        if text:
            print(f"    {key}: {text[:400]}")


def judge(cases, report_dir):
    failed = [c for c, v in cases.items() if v["behavior"] not in PASSING or v["behaviorClose"] not in PASSING]
    for case_id in sorted(failed, key=case_order):
        print_failure(case_id, cases[case_id], report_dir)
    counts = dict(sorted(Counter(v["behavior"] for v in cases.values()).items()))
    print(f"autobahn: {len(cases)} cases, {len(cases) - len(failed)} passed, {len(failed)} failed; behaviors {counts}")
    return 1 if failed else 0


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    cases = load_cases(argv[1])
    return judge(cases, os.path.dirname(os.path.abspath(argv[1])))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
