#!/usr/bin/env bash
# Gradescope builds the autograder image with this once. The autograder zip holds run_autograder,
# this file and a copy of the normderive repository in normderive/ (with its generated/ package).
set -euo pipefail
apt-get update -qq
apt-get install -y -qq python3 python3-pip
python3 -m pip install -q /autograder/source/normderive
