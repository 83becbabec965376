"""Worker process for :mod:`calibrl_ext.symbolic`: math-verify requests over stdin/stdout, one JSON per line.

Run by the parent as a script (never imported by the library), so that a request that hangs in C code
(sympy/GMP evaluating ``9^{9^{9^9}}``) can be killed from outside: math-verify's own timeouts use
``signal.alarm``, which neither works off the main thread (verl calls rewards from executor threads)
nor interrupts C code.

Protocol (all lines are UTF-8 JSON objects):

- on start the worker writes ``{"ready": true}`` once the imports are done;
- request ``{"op": "equal", "gold": str, "pred": str}`` -> ``{"equal": bool, "error": str | null}``:
  math-verify's ``verify(parse(gold), parse(pred))``, both wrapped in ``\\boxed{}`` so that the
  LaTeX extractor takes the whole string;
- request ``{"op": "numeric", "expr": str}`` -> ``{"value": float | null, "error": str | null}``:
  the expression's numeric value when it has one (``\\frac{2\\pi}{3}`` -> 2.0944), else null.

The worker exits when its stdin closes (the parent died or closed it).
"""

import json
import logging
import sys


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once per process that its timeout is off; here that is by design (the parent
    enforces a hard limit by killing this process), so that one message is dropped and every other
    math-verify log record still reaches stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


def _boxed(text: str) -> str:
    return text if "\\boxed" in text else "\\boxed{" + text + "}"


def _handle(request: dict, parse, verify) -> dict:
    op = request.get("op")
    if op == "equal":
        gold = parse(_boxed(request["gold"]), parsing_timeout=None)
        pred = parse(_boxed(request["pred"]), parsing_timeout=None)
        if not gold or not pred:
            return {"equal": False, "error": None}
        return {"equal": bool(verify(gold, pred, timeout_seconds=None)), "error": None}
    if op == "numeric":
        parsed = parse(_boxed(request["expr"]), parsing_timeout=None)
        for candidate in parsed[:1]:
            if hasattr(candidate, "evalf"):
                value = candidate.evalf()
                if getattr(value, "is_real", False) and getattr(value, "is_number", False):
                    return {"value": float(value), "error": None}
        return {"value": None, "error": None}
    return {"error": f"unknown op {op!r}"}


def main() -> None:
    for name in ("math_verify", "math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
    from math_verify import parse, verify

    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            response = _handle(json.loads(line), parse, verify)
        except Exception as exc:  # reported to the parent, which logs it with the input
            response = {"equal": False, "value": None, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(response) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
