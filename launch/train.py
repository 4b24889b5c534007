#!/usr/bin/env python
"""Entry point for `accelerate launch`:

    accelerate launch --config_file accelerate_configs/zero3.yaml launch/train.py recipes/x.yaml [--key value ...]
"""
import sys

from reward.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
