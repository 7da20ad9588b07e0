#!/usr/bin/env python3
"""CDK entry point (cdk.json: `../.venv/bin/python app.py`). Settings come from the CDK context.

A setting that cannot be used (e.g. env=prod without alertEmail) stops synth with one line on
stderr and exit code 2, before anything is synthesized.
"""

import sys

from healthtech_infra import ConfigError, build_app

try:
    app, _ = build_app()
except ConfigError as exc:
    print(f"app.py: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
app.synth()
