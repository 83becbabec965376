"""Reward throughput: responses scored per second on the exact-match path and on the symbolic path.

Prints figures; asserts nothing. Every input is distinct, so math-verify's internal parse caches do
not flatter the symbolic figure.

    python bench/reward_throughput.py                       # defaults below
    python bench/reward_throughput.py --threads 4 --workers 4

Paths measured:
- exact: answers decided without math-verify (numbers, choice letters, units, thousands separators);
- symbolic: answers that need math-verify (radicals, pi fractions, polynomials), run in the worker pool;
- timeout: wall time of one pathological answer (a power tower) under ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

from calibrl_ext.reward import compute_score
from calibrl_ext.symbolic import SymbolicChecker, get_checker


def respond(answer: str) -> str:
    return f"<think>Reasoning about the figure, step by step.</think><answer>{answer}</answer>"


def exact_cases(n: int) -> list[tuple[str, str]]:
    """Distinct (response, gold) pairs decided by the exact / numeric / choice steps."""
    makers = (
        lambda k: (respond(str(k)), str(k)),
        lambda k: (respond(f"{k:,} cm"), str(k)),
        lambda k: (respond(f"{k}°"), f"{k}^\\circ"),
        lambda k: (respond("(" + "ABCD"[k % 4] + f") {k}"), "ABCD"[k % 4]),
        lambda k: (respond(f"{k}.50"), f"{k}.5"),
        lambda k: (respond(str(k + 1)), str(k)),  # wrong: two numbers, decided by the numeric step
    )
    return [makers[i % len(makers)](1000 + i) for i in range(n)]


def symbolic_cases(n: int) -> list[tuple[str, str]]:
    """Distinct (response, gold) pairs that only math-verify can decide."""
    makers = (
        lambda k: (respond(f"{k}\\sqrt{{3}}"), f"\\sqrt{{{3 * k * k}}}"),
        lambda k: (respond(f"\\frac{{{k}\\pi}}{{2}}"), f"{k}\\pi/2"),
        lambda k: (respond(f"(x+{k})^2"), f"x^2+{2 * k}x+{k * k}"),
        lambda k: (respond(f"{k}\\sqrt{{2}}"), f"\\sqrt{{{3 * k * k}}}"),  # wrong
    )
    return [makers[i % len(makers)](2 + i) for i in range(n)]


def throughput(cases: list[tuple[str, str]], threads: int, **kwargs) -> tuple[float, float]:
    """(responses per second, mean accuracy) of scoring ``cases`` from ``threads`` threads."""
    started = time.perf_counter()
    if threads == 1:
        results = [compute_score("bench", response, gold, **kwargs) for response, gold in cases]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(lambda case: compute_score("bench", case[0], case[1], **kwargs), cases))
    elapsed = time.perf_counter() - started
    return len(cases) / elapsed, sum(r["acc"] for r in results) / len(results)


def in_process_math_verify_rate(cases: list[tuple[str, str]]) -> float:
    """Responses/s of math-verify called directly (what the released code did), for comparison."""
    from math_verify import parse, verify

    from calibrl_ext.answers import extract_answer

    started = time.perf_counter()
    for response, gold in cases:
        verify(parse(f"\\boxed{{{gold}}}"), parse(f"\\boxed{{{extract_answer(response)}}}"))
    return len(cases) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-exact", type=int, default=20000, help="responses on the exact path")
    parser.add_argument("--n-symbolic", type=int, default=400, help="responses on the symbolic path")
    parser.add_argument("--threads", type=int, default=2, help="caller threads (verl's executor calls concurrently)")
    parser.add_argument("--workers", type=int, default=2, help="math-verify worker processes (symbolic_workers)")
    parser.add_argument("--timeout", type=float, default=3.0, help="symbolic_timeout_s")
    args = parser.parse_args()
    kwargs = {"symbolic_workers": args.workers, "symbolic_timeout_s": args.timeout}

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")

    rate, acc = throughput(exact_cases(args.n_exact), threads=1, **kwargs)
    print(f"exact path, 1 thread:      {rate:10.0f} responses/s  (n={args.n_exact}, mean acc {acc:.2f})")

    started = time.perf_counter()
    pool = SymbolicChecker(workers=1)
    pool.equal("1", "1", 60.0)
    print(f"worker start-up:           {time.perf_counter() - started:10.2f} s (spawn + import math-verify, once per worker)")
    pool.close()

    get_checker(args.workers).equal("1", "1", 60.0)  # start the shared pool outside the timed region
    for threads in sorted({1, args.threads}):
        rate, acc = throughput(symbolic_cases(args.n_symbolic), threads=threads, **kwargs)
        print(
            f"symbolic path, {threads} thread(s), {args.workers} workers: {rate:8.1f} responses/s  "
            f"(n={args.n_symbolic}, mean acc {acc:.2f})"
        )

    rate = in_process_math_verify_rate(symbolic_cases(args.n_symbolic))
    print(f"reference: math-verify in-process, main thread, no isolation: {rate:8.1f} responses/s")

    started = time.perf_counter()
    result = compute_score("bench", respond("9^{9^{9^{9}}}"), "3", **kwargs)
    print(
        f"pathological answer:       {time.perf_counter() - started:10.2f} s wall "
        f"(limit {args.timeout} s, timeout flag {result['timeout']:.0f}, acc {result['acc']:.0f})"
    )


if __name__ == "__main__":
    main()
