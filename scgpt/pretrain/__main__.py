"""``python -m scgpt.pretrain --config run.yaml [--set key=value ...]``."""

import sys

from scgpt.pretrain.run import main

if __name__ == "__main__":
    sys.exit(main())
