"""Hyper-parameter search: ``python run_hyper_dr.py --model=DiffuReasonSASRec --dataset=ml-100k [--tool ray]``.

Thin wrapper over ``recbole_diffureason.cli.main(["hyper", ...])``; see ``--help``.
"""

import sys

from recbole_diffureason.cli import main

if __name__ == "__main__":
    sys.exit(main(["hyper"] + sys.argv[1:]))
