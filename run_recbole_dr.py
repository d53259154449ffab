"""Train and evaluate a model with RecBole: ``python run_recbole_dr.py --model=DiffuReasonSASRec --dataset=ml-100k``.

Thin wrapper over ``recbole_diffureason.cli.main``; see ``--help``.
"""

import sys

from recbole_diffureason.cli import main

if __name__ == "__main__":
    sys.exit(main())
