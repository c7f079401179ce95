#!/usr/bin/env python
"""Run every benchmark in one process and refresh bench/RESULTS.md.

    PYTHONPATH=python python bench/run.py            # full run (minutes)
    PYTHONPATH=python python bench/run.py --quick    # smoke run

The benchmark code lives in crevkit.benchmarks (so `crevkit bench` works
after installation); this script is the same as
`crevkit bench --output bench/RESULTS.md`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from crevkit.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--output" not in args:
        args += ["--output", str(Path(__file__).with_name("RESULTS.md"))]
    main(["bench", *args])
