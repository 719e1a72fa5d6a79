#!/usr/bin/env python3
"""Judges an Autobahn|Testsuite fuzzingclient report.

usage: autobahn-judge.py INDEX_JSON [WSTEST_LOG]

A case passes when both its behavior and its close behavior are OK, NON-STRICT, INFORMATIONAL or
UNIMPLEMENTED. With WSTEST_LOG (the fuzzing client's output), every case it planned to run (its
`Cases = [...]` line) must be in the report: a planned case without a verdict fails, as does a log
without that line. Prints each failing or missing case with its details, then a summary line; exits 1
when a case failed or is missing, or when the report holds no case at all (wstest writes an empty report
when it reached no server).
"""
import ast
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


def planned_cases(log_path):
    """The case ids wstest announced (`Cases = ['1.1.1', ...]`) in its log."""
    try:
        with open(log_path) as f:
            for line in f:
                if line.startswith("Cases = ["):
                    return set(ast.literal_eval(line[len("Cases = ") :].strip()))
    except (OSError, ValueError, SyntaxError) as e:
        sys.exit(f"autobahn: cannot read the planned cases from {log_path} ({e})")
    sys.exit(f"autobahn: {log_path} has no 'Cases = [...]' line; did the fuzzing client start?")


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


def judge(cases, report_dir, planned):
    failed = [c for c, v in cases.items() if v["behavior"] not in PASSING or v["behaviorClose"] not in PASSING]
    for case_id in sorted(failed, key=case_order):
        print_failure(case_id, cases[case_id], report_dir)
    missing = sorted(planned - cases.keys(), key=case_order)
    for case_id in missing:
        print(f"MISSING {case_id}: planned by wstest, no verdict in the report")
    counts = dict(sorted(Counter(v["behavior"] for v in cases.values()).items()))
    expected = f" of {len(planned)} planned" if planned else ""
    print(
        f"autobahn: {len(cases)} cases{expected}, {len(cases) - len(failed)} passed, {len(failed)} failed,"
        f" {len(missing)} missing; behaviors {counts}"
    )
    return 1 if failed or missing else 0


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    cases = load_cases(argv[1])
    planned = planned_cases(argv[2]) if len(argv) == 3 else set()
    return judge(cases, os.path.dirname(os.path.abspath(argv[1])), planned)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
