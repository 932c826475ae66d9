"""A long-lived ``python -m fastgradmix.predict`` for tests that run it hundreds of times
(tests/test_model_fuzz.py): one process under a memory cap (RLIMIT_AS), torch imported once.

Protocol: one JSON request per stdin line, a list of command-line arguments; one JSON answer per line,
{"code": exit code or "crash", "out": stdout, "err": stderr} with the two texts as a real process would
write them (UTF-8, strict on stdout), or the traceback of anything that escaped the CLI. The first line
written is "ready" once the cap is set and torch is imported.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import traceback


def _run(args: list[str]) -> dict:
    from fastgradmix.predict import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as stop:
            code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
        except BaseException:  # noqa: BLE001 - a crash is the finding: report it, with its traceback
            code = "crash"
            err.write(traceback.format_exc())
    try:
        out.getvalue().encode("utf-8")  # what a real stdout (UTF-8, strict) would refuse
    except UnicodeEncodeError as problem:
        code, err = "crash", io.StringIO(f"stdout could not be encoded: {problem}")
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def serve(memory_cap: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))
    import fastgradmix.predict  # noqa: F401 - imported once, under the cap

    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(_run(json.loads(line))), flush=True)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
