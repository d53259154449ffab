"""Several models, one dataset, one table.

``python run_recbole_group_dr.py --model_list=SASRec,DiffuReasonSASRec --dataset=ml-100k``.

Thin wrapper over ``recbole_diffureason.cli.main(["group", ...])``, with RecBole's ``run_recbole_group.py`` flags;
see ``--help``.
"""

import sys

from recbole_diffureason.cli import main

if __name__ == "__main__":
    sys.exit(main(["group"] + sys.argv[1:]))
