"""The long fuzz runs (docs/security.md "Fuzzing"): the frame fuzzer over WebSocket and
long-poll, and schemathesis over the OpenAPI document, each against a real socket.

    .venv/bin/python -m tests.bench.fuzz [--frames 5000] [--per-operation 40]

``--frames`` batches per transport (each batch 1-12 frames on one connection or session);
``--per-operation`` schemathesis examples per operation and backend (memory and SQLite),
randomised (``make test`` runs fixed seeds with far fewer). Exit code 0 means no server
error was found.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def run(args: list[str], env: dict[str, str]) -> int:
    started = time.monotonic()
    pytest = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-W", "ignore"]
    code = subprocess.call([*pytest, "-o", "timeout=0", *args], env={**os.environ, **env})
    print(f"-> exit {code} in {time.monotonic() - started:.0f} s", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--per-operation", type=int, default=40)
    opts = parser.parse_args()
    codes = [
        run(["tests/test_fuzz_frames.py"], {"KEFU_FRAME_FUZZ_EXAMPLES": str(opts.frames)}),
        run(
            ["tests/test_openapi.py", "-k", "conforms"],
            {"KEFU_FUZZ_EXAMPLES": str(opts.per_operation)},
        ),
    ]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
