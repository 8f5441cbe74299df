#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder image: Python 3.11 and the course's pins.
set -euo pipefail
apt-get update -q
apt-get install -y -q python3.11 python3.11-venv
python3.11 -m venv /autograder/venv
/autograder/venv/bin/python -m pip install -q --upgrade pip
/autograder/venv/bin/python -m pip install -q -r /autograder/source/requirements.txt
